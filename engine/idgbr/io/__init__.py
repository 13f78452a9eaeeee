"""Reading the user's layers onto the image grid, and writing results atomically."""
