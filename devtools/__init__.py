"""Development tools beside the product: used by tests and benchmarks, never by the product."""
