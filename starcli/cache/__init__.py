"""What starcli keeps on disk between runs: private directories, and the encoded documents of --cache."""
