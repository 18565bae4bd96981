"""Student evaluation on benchmark files: generation through the teacher engine path, scoring with verifiers."""
