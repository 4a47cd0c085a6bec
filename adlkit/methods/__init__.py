"""Methods, one file each, reading top to bottom like the paper's algorithm."""
