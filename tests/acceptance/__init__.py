"""The whole stack driven from outside, as its users drive it (a real browser)."""
