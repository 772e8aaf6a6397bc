"""The application on top of the library: CLI, commands, training engine, data sets,
predict, serve, export. The library (layers, functional, decompose, rank, pruning,
transduction, heads, models) never imports from here."""
