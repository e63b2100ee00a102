content of src/lib/util.c
