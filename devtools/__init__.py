"""Development tools beside the product."""
