"""checkout_cam: a real-time camera checkout assistant.

Data flow, one module per room: sources (frames) -> frame_queue -> worker
(inference) -> review (policy) -> render / sinks.
"""

__version__ = "0.1.0"
