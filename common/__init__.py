"""What both the producer and the workers need: defaults, errors, templates, schemas, keys, I/O."""
