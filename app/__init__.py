"""The reviewer app: compare backends side by side, vote blind, read eval runs.

Gradio phones home at launch unless told not to, and this app must work offline, so the switch
is set before anything here can import gradio.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
