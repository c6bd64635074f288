"""Call recordings on disk: one stereo FLAC per Media Streams call (README "Recordings")."""

from appliance.recordings.files import Recordings
from appliance.recordings.writer import FlacWriter

__all__ = ["FlacWriter", "Recordings"]
