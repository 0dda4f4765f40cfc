from .__about__ import __version__
from .check import OpenAICheck

__all__ = ['__version__', 'OpenAICheck']
