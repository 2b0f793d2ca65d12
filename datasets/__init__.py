"""Media I/O, the sample builder (V_condition, M_condition, V_target, prompt) and the encode cache."""
