content of sub/keep.c
