"""Open image files from others safely: one RGB ``PIL.Image`` or one ``ZooError`` naming the file.

Every place zoo reads an image from disk (``zoo generate --image``, training and evaluation data)
goes through :func:`open_image`, so the same inputs are refused the same way: a path that is not a
regular file (a FIFO would hang, a device would never end), a file past a size limit, a truncated or
corrupt file, a decompression bomb, an empty (0-pixel) image. Modes other than RGB (palette, RGBA,
CMYK, 16-bit greyscale, animated GIF/PNG/WebP) are converted to RGB; an animation gives its first frame.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, cast

from zoo.errors import ZooError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "ImageError", "load_strictly", "open_image", "to_rgb"]

MAX_IMAGE_BYTES = 256 * 1024 * 1024  # larger files are refused before they are read
MAX_IMAGE_PIXELS = 178_956_970  # PIL's own bomb threshold (its warning level x 2), made an error


class ImageError(ZooError):
    """An image file cannot be used: missing, not a regular file, too large, corrupt or empty."""


def open_image(path: str | os.PathLike, *, what: str = "image") -> PILImage.Image:
    """Read ``path`` fully and return it as an RGB image.

    Args:
        path: the image file.
        what: how to name the file in messages (``--image``, ``data.train[3].image``...).

    Raises:
        ImageError: naming ``what`` and the path, for every way the file can be unusable.

    Example:
        >>> image = open_image("cat.png", what="--image")
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    where = f"{what} {str(path)!r}"
    try:
        info = path.stat()
    except FileNotFoundError as error:
        raise ImageError(f"{where} does not exist") from error
    except OSError as error:
        raise ImageError(f"{where} cannot be read: {error.strerror or error}") from error
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"{where} is not a regular file (a directory, FIFO or device cannot be an image)")
    if info.st_size > MAX_IMAGE_BYTES:
        raise ImageError(f"{where} is {info.st_size:,} bytes; images over {MAX_IMAGE_BYTES:,} bytes are refused")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_size(image, where)
                load_strictly(image)  # read every byte now: a truncated file fails here, not inside a tower
                return to_rgb(image, where=where)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{where} is a decompression bomb ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{where} is not an image file PIL can read") from error
    except (OSError, SyntaxError, ValueError) as error:  # truncated / corrupt data
        raise ImageError(f"{where} is corrupt or truncated ({error})") from error


_STRICT_LOADING = threading.Lock()


def load_strictly(image: PILImage.Image) -> None:
    """Read every pixel of ``image``; a truncated file raises ``OSError`` even where another library has set
    PIL's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES`` (lmms-eval does on import), which would otherwise
    fill the missing rows with grey and say nothing."""
    from PIL import ImageFile

    with _STRICT_LOADING:
        lenient = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def to_rgb(image: PILImage.Image, *, where: str = "image") -> PILImage.Image:
    """``image`` as a loaded RGB image: first frame of an animation, alpha dropped onto white."""
    _check_size(image, where)
    if getattr(image, "is_animated", False):
        image.seek(0)
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        from PIL import Image

        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode.startswith("I"):  # 16/32-bit greyscale: scale to 8 bits instead of clipping at 255
        wide = image.convert("I")
        top = 65535 if image.mode.startswith("I;16") else max(1, int(cast("float", wide.getextrema()[1])))
        return wide.point(lambda v: v * (255.0 / top)).convert("L").convert("RGB")
    return image.convert("RGB")


def _check_size(image: PILImage.Image, where: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{where} is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{where} has {width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit")
