content of src/main.c
