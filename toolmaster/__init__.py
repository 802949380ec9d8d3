"""ToolMaster: teach language models to trial unfamiliar tools, then execute the task.

Reference implementation of "Teaching LLMs to Learn Tool Trialing and Execution through Environment
Interaction" (arXiv 2601.12762). Data flows one way:
task -> prompt -> sampler loop (model <-> environment) -> trajectory -> reward -> loss.
"""

__version__ = "0.1.0"
