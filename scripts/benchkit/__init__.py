"""The parts of scripts/bench.py, the entry point: core.py holds the statistics, the timing helpers,
the figure keys and definitions and the Bench context every section takes; model.py, pipeline.py,
lanes.py and services.py hold the sections themselves (the model alone; replay, live and serve end
to end; several lanes in one serve; the web and MQTT services). bench.py lists them in SECTIONS."""
