"""Built-in reference models (the zoo): builders only, no downloads."""
