"""Intake: from spans to a sample. Trace-id sampling, extraction (what each OpenInference span carries) and
trace assembly (which span is the question, the answer, the contexts), shared by the span processor and the
collector."""
