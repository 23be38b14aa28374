"""Resource stores shared by the control plane and the operator."""
