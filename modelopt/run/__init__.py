"""Running cells: planning, training, measuring, backends, processes, ranks and timing."""
