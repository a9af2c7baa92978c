"""What a cell is: outcomes, the registry of implementations, the trusted reference GRL, running one cell."""
