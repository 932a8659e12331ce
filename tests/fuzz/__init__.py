"""Coverage-guided fuzz harnesses (atheris) for the code that reads hostile input (issue 10)."""
