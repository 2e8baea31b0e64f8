"""Recipe plugins: the methods (loss terms and generators)."""
