"""Extensions: components outside the pipeline that others use (authenticators)."""
