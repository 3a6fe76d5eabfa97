"""Every reason code, in one place.

A sample that is not kept carries one of these in the manifest's ``reason`` column:
errors (the sample could not be processed as given), duplicates, and policy drops by a
filter. Source issues (a stretch of a source file, not one sample) use their own codes.
The README's state table is checked against these sets (``tests/test_reasons.py``).
"""

from __future__ import annotations


class Reason:
    """Fixed reason codes. Policy drops (filters, dedup) never share a code with
    processing failures (errors), so a count of ``decode_error`` is never mixed with
    a count of content that a filter chose to drop."""

    # errors: the sample could not be processed as given
    DECODE_ERROR = "decode_error"
    TOO_MANY_PIXELS = "too_many_pixels"
    IMAGE_TOO_LARGE = "image_too_large"
    MISSING_IMAGE = "missing_image"
    MULTIPLE_IMAGES = "multiple_images"
    MISSING_CAPTION = "missing_caption"
    INVALID_CAPTION_ENCODING = "invalid_caption_encoding"
    INVALID_JSON = "invalid_json"
    INVALID_KEY = "invalid_key"
    DUPLICATE_KEY = "duplicate_key"
    TRUNCATED_SHARD = "truncated_shard"
    READ_ERROR = "read_error"
    INFERENCE_ERROR = "inference_error"
    UNSUPPORTED_FORMAT = "unsupported_format"
    UNSUPPORTED_MEMBER = "unsupported_member"
    DUPLICATE_MEMBER = "duplicate_member"
    TOO_MANY_MEMBERS = "too_many_members"
    CAPTION_TOO_LARGE = "caption_too_large"
    JSON_TOO_LARGE = "json_too_large"
    IMAGE_PATH_OUTSIDE_ROOT = "image_path_outside_root"
    IMAGE_URL = "image_url"  # a table's image is a web address: nothing is downloaded
    # a table's image path that is not text (bytes that are not UTF-8, a lone surrogate)
    INVALID_IMAGE_PATH = "invalid_image_path"
    # a CSV row whose quoted cell ran on over lines that look like rows (a quote left open)
    INVALID_ROW = "invalid_row"
    # source issues (a stretch of a source file, not one sample)
    DAMAGED_HEADER = "damaged_header"
    MISSING_END_MARKER = "missing_end_marker"
    TRAILING_DATA = "trailing_data"
    # members an operating system adds (macOS ._ AppleDouble files, .DS_Store, ...)
    OS_METADATA = "os_metadata"
    # a folder source's hidden files and folders (a name starting with a dot), and its
    # links to folders (not followed)
    SKIPPED_FILES = "skipped_files"
    # CSV lines read into one quoted cell (a quote left open): rows that are not listed
    SWALLOWED_ROWS = "swallowed_rows"
    # duplicates (state "duplicate")
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    EVAL_OVERLAP = "eval_overlap"
    # policy drops (state "filtered"); ONNX filters add image_above_threshold(filter_id)
    BLOCKLIST = "blocklist"
    IMAGE_TOO_SMALL = "image_too_small"
    ASPECT_RATIO_OUT_OF_RANGE = "aspect_ratio_out_of_range"
    FILE_TOO_SMALL = "file_too_small"
    FILE_TOO_LARGE = "file_too_large"
    CAPTION_TERM_MATCH = "caption_term_match"
    # a near-dup decision that changes no state: verification refused the closest candidate
    NOT_MERGED = "not_merged"

    ERRORS = frozenset(
        {
            DECODE_ERROR,
            TOO_MANY_PIXELS,
            IMAGE_TOO_LARGE,
            MISSING_IMAGE,
            MULTIPLE_IMAGES,
            MISSING_CAPTION,
            INVALID_CAPTION_ENCODING,
            INVALID_JSON,
            INVALID_KEY,
            DUPLICATE_KEY,
            TRUNCATED_SHARD,
            READ_ERROR,
            INFERENCE_ERROR,
            UNSUPPORTED_FORMAT,
            UNSUPPORTED_MEMBER,
            DUPLICATE_MEMBER,
            TOO_MANY_MEMBERS,
            CAPTION_TOO_LARGE,
            JSON_TOO_LARGE,
            IMAGE_PATH_OUTSIDE_ROOT,
            IMAGE_URL,
            INVALID_IMAGE_PATH,
            INVALID_ROW,
        }
    )

    SOURCE_ISSUES = frozenset(
        {
            DAMAGED_HEADER,
            MISSING_END_MARKER,
            TRAILING_DATA,
            OS_METADATA,
            SKIPPED_FILES,
            SWALLOWED_ROWS,
        }
    )
    DUPLICATES = frozenset({EXACT_DUPLICATE, NEAR_DUPLICATE, EVAL_OVERLAP})
    FILTER_DROPS = frozenset(
        {
            BLOCKLIST,
            IMAGE_TOO_SMALL,
            ASPECT_RATIO_OUT_OF_RANGE,
            FILE_TOO_SMALL,
            FILE_TOO_LARGE,
            CAPTION_TERM_MATCH,
        }
    )


#: Suffix of an ONNX image filter's reason: ``<filter id>_image_above_threshold``.
IMAGE_ABOVE_THRESHOLD_SUFFIX = "_image_above_threshold"


def image_above_threshold(filter_id: str) -> str:
    """The reason an ONNX image filter with this id drops with (e.g. ``nsfw`` ->
    ``nsfw_image_above_threshold``): the only code built from a user's name."""
    return f"{filter_id}{IMAGE_ABOVE_THRESHOLD_SUFFIX}"


def is_known(reason: str) -> bool:
    """True for every code a sample's manifest row can carry (any filter id)."""
    return (
        reason in Reason.ERRORS
        or reason in Reason.DUPLICATES
        or reason in Reason.FILTER_DROPS
        or (
            reason.endswith(IMAGE_ABOVE_THRESHOLD_SUFFIX) and reason != IMAGE_ABOVE_THRESHOLD_SUFFIX
        )
    )
