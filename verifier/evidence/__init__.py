"""Evidence handling, one subpackage per kind: parse -> authenticate -> appraise."""
