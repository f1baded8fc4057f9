"""Model weights on the verifier side: encrypting checkpoints for gated release."""
