"""Modules generated from proto/ by scripts/generate-proto.sh; never edit by hand.

Their descriptors live in ``POOL``, not protobuf's default pool, so they do not
clash with other packages (tritonclient, kserve, mlserver) that register the
same ``inference.*`` message names.
"""

from google.protobuf.descriptor_pool import DescriptorPool

POOL = DescriptorPool()
