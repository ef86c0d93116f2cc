"""Generated protobuf code for the saga event envelope (regenerate with ``make proto``)."""
