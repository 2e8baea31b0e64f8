"""The paper's formulas as pure tensor functions: VAT directions, bad samples, K+1 terms."""
