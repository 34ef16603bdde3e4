"""The toy world: a procedural image domain, its tokenizer, classifier and tiny SD pipeline."""
