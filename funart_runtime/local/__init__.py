"""Local stand-ins for Function Compute, for ``funart local`` and the tests."""
