"""Read an Opera Phenix `Index.idx.xml`: plate barcode, acquisition time, channels and pixel size.

Harmony versions differ in namespace, element order and byte-order mark, so tags are matched by
their local name only; the file is parsed incrementally, each image entry dropped once read (a full
plate's index lists 27,648 images).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from xml.etree import ElementTree

from converters.errors import SourceError

INDEX_FILE = "Index.idx.xml"
PLATE_FIELDS = {"PlateID": "plate_id", "MeasurementID": "measurement_id", "MeasurementStartTime": "start_time",
                "Name": "plate_name", "PlateTypeName": "plate_type"}
CHANNEL_FIELDS = {"ChannelName": "microscope_name", "ChannelType": "channel_type",
                  "MainExcitationWavelength": "excitation_nm", "MainEmissionWavelength": "emission_nm"}
LENGTH_UNITS_UM = {"m": 1e6, "mm": 1e3, "um": 1.0, "µm": 1.0, "nm": 1e-3}


@dataclass
class Measurement:
    """One Phenix measurement (one plate): what its Index.idx.xml says, keyed by channel number."""

    plate: dict[str, str] = field(default_factory=dict)
    instrument: str = ""
    channels: dict[int, dict[str, str | float]] = field(default_factory=dict)
    pixel_size_um: float | None = None

    @property
    def barcode(self) -> str:
        return self.plate.get("plate_id") or self.plate.get("plate_name", "")

    def describe(self) -> dict:
        """The measurement as JSON-able attributes: instrument, plate ids, acquisition start time, pixel size."""
        return {"instrument": self.instrument, **self.plate, "pixel_size_um": self.pixel_size_um}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(element: ElementTree.Element) -> dict[str, str]:
    return {_local(child.tag): (child.text or "").strip() for child in element}


def _number(text: str) -> float | int | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else value


def _pixel_size(element: ElementTree.Element, where: str) -> float | None:
    """ImageResolutionX in micrometres (Harmony writes metres, with a Unit attribute)."""
    for child in element:
        if _local(child.tag) == "ImageResolutionX" and child.text:
            unit = child.get("Unit", "m")
            if unit not in LENGTH_UNITS_UM:
                raise SourceError(f"{where}: ImageResolutionX in unknown unit {unit!r}")
            return round(float(child.text) * LENGTH_UNITS_UM[unit], 9)
    return None


def read_index(data: bytes, where: str) -> Measurement:
    """Parse one Index.idx.xml; a file that is not XML, or names no plate, raises naming the file."""
    measurement = Measurement()
    try:
        for _, element in ElementTree.iterparse(io.BytesIO(data), events=("end",)):
            name = _local(element.tag)
            if name == "Plate":
                values = _child_text(element)
                measurement.plate = {key: values[tag] for tag, key in PLATE_FIELDS.items() if values.get(tag)}
            elif name == "InstrumentType":
                measurement.instrument = (element.text or "").strip()
            elif name == "Image":
                _read_image(element, measurement, where)
                element.clear()
    except ElementTree.ParseError as exc:
        raise SourceError(
            f"{where}: not a readable {INDEX_FILE} ({exc}); re-download it, or remove it and pass --plate"
        ) from exc
    if not measurement.barcode:
        raise SourceError(f"{where}: no <PlateID> in this Index.idx.xml; pass --plate NAME and remove the file")
    return measurement


def _read_image(element: ElementTree.Element, measurement: Measurement, where: str) -> None:
    """Record the first image of each channel: its channel name, type, wavelengths, and the pixel size."""
    values = _child_text(element)
    if not values.get("ChannelID", "").isdigit():
        return
    channel = int(values["ChannelID"])
    if channel not in measurement.channels:
        measurement.channels[channel] = {key: _number(values[tag]) if tag.endswith("Wavelength") else values[tag]
                                         for tag, key in CHANNEL_FIELDS.items() if values.get(tag)}
    if measurement.pixel_size_um is None:
        measurement.pixel_size_um = _pixel_size(element, where)
