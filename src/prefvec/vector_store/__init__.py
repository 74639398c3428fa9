"""Preference-vector storage: file format, base fingerprints, validation, the local store, recipes.

Typical use::

    from prefvec.vector_store import BaseSpec, LocalStore

    store = LocalStore("store/", base=BaseSpec.from_model_dir(model_dir))
    record = store.put("helpful.safetensors")      # validated, atomic, versioned
    vector = store.get("helpful@latest")           # sha256-checked
"""

from prefvec.vector_store.base_spec import BaseSpec, TensorSpec
from prefvec.vector_store.fingerprint import (
    ST_DTYPES,
    TORCH_TO_ST,
    fingerprint_files,
    fingerprint_model_dir,
    fingerprint_state_dict,
    tensor_specs,
)
from prefvec.vector_store.format import (
    FORMAT_VERSION,
    METADATA_KEY,
    NAME_PATTERN,
    PreferenceVector,
    VectorMetadata,
    check_name,
    lora_keys,
    module_of_key,
    read_metadata,
)
from prefvec.vector_store.recipes import Recipe, known_methods
from prefvec.vector_store.store import (
    DEFAULT_MAX_VECTOR_BYTES,
    LocalStore,
    VectorRecord,
    sha256_file,
)
from prefvec.vector_store.validation import (
    ALLOWED_DTYPES,
    format_ref,
    infer_kind,
    parse_ref,
    validate_vector_file,
)

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_MAX_VECTOR_BYTES",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "NAME_PATTERN",
    "ST_DTYPES",
    "TORCH_TO_ST",
    "BaseSpec",
    "LocalStore",
    "PreferenceVector",
    "Recipe",
    "TensorSpec",
    "VectorMetadata",
    "VectorRecord",
    "check_name",
    "fingerprint_files",
    "fingerprint_model_dir",
    "fingerprint_state_dict",
    "format_ref",
    "infer_kind",
    "known_methods",
    "lora_keys",
    "module_of_key",
    "parse_ref",
    "read_metadata",
    "sha256_file",
    "tensor_specs",
    "validate_vector_file",
]
