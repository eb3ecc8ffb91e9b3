"""Running a document: the session on a rank (load, plan, encode, answer), here or on torchrun ranks."""
