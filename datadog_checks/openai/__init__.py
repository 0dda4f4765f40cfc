from .__about__ import __version__
from .agent import allow_secure_fields_on_older_bases, unsupported_base_message, unsupported_check_class

# Decided before the check's modules are imported: an older datadog-checks-base may lack what they import.
_UNSUPPORTED = unsupported_base_message()
if _UNSUPPORTED is None:
    allow_secure_fields_on_older_bases()
    from .check import OpenAICheck
else:
    OpenAICheck = unsupported_check_class(_UNSUPPORTED)

__all__ = ['__version__', 'OpenAICheck']
