"""Development tools that use the run path: the speed bench, the accuracy suite, random models, the usage doc."""
