"""Reading labels from the engine's outputs: readout rules, fitted heads, calibrate."""
