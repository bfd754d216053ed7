"""Side files and Hugging Face checkpoint directories.

A task may carry small side files (config.json, tokenizer files, ...) pushed with its
delta; the server checks their names and limits (a plain UTF-8 file name, at most 32 MiB
per file, 64 MiB and 64 files per task; proto/deltaserve/v1/delta_service.proto, "Side
files") and stores them with the task. pull_dir writes a task as the directory that
`deltactl pull --out-dir` writes: model-0000i-of-0000N.safetensors shards, the
model.safetensors.index.json (weight_map and metadata.total_size) and the side files, so
that the directory loads like the original finetuned checkpoint.
"""
import os
import re
import shutil
import tempfile

import xxhash

from deltaserve.errors import data_loss, from_os_error, invalid_argument
from deltaserve.safetensors import header_bytes, json_bytes
from deltaserve.v1 import delta_service_pb2 as pb

# What side_files_from picks (deltactl push --side-files-from picks the same): the
# small files of a Hugging Face checkpoint that make it load.
CHECKPOINT_SIDE_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
    "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "chat_template.json",
    "chat_template.jinja", "preprocessor_config.json", "processor_config.json")

_SHARD_NAME = re.compile(r"model-[0-9]{5}-of-[0-9]{5}\.safetensors")
_INDEX = "model.safetensors.index.json"
_MAX_SLICE = (4 << 20) - (1 << 10)  # proto::kMaxChunkBytes


def side_files_from(directory):
    """{name: path} of the CHECKPOINT_SIDE_FILES present in `directory`."""
    if not os.path.isdir(directory):
        raise invalid_argument(f"side files: {directory} is not a directory")
    return {n: os.path.join(directory, n) for n in CHECKPOINT_SIDE_FILES
            if os.path.isfile(os.path.join(directory, n))}


def read_side_files(side_files):
    """[(name, bytes)] of `side_files`: a dict {name: bytes-like or path}, or an iterable
    of paths (each stored under its base name). INVALID_ARGUMENT for a name given twice;
    NOT_FOUND-style DeltaserveError for an unreadable file."""
    if side_files is None:
        return []
    items = side_files.items() if isinstance(side_files, dict) else (
        (os.path.basename(os.fspath(p)), p) for p in side_files)
    out, seen = [], set()
    for name, value in items:
        if name in seen:
            raise invalid_argument(f"side file '{name}' is given twice")
        seen.add(name)
        if isinstance(value, (str, os.PathLike)):
            try:
                with open(value, "rb") as f:
                    value = f.read()
            except OSError as e:
                raise invalid_argument(f"side file '{name}': cannot read {value}: {e}") from None
        out.append((name, bytes(value)))
    return out


def side_file_infos(files):
    """SideFileDecl messages (name, size, XXH3-64) of [(name, bytes)]."""
    return [pb.SideFileDecl(name=name.encode("utf-8"), size_bytes=len(data),
                            xxh3_64=xxhash.xxh3_64_intdigest(data)) for name, data in files]


def get_side_file(client, task, name):
    """The bytes of side file `name` of `task` (GetSideFile, in slices), whole size and
    XXH3-64 verified (DATA_LOSS otherwise, also when the task was replaced between two
    slices). NOT_FOUND for an unknown task or file."""
    label = client._label("GetSideFile", task) + f" '{name}'"
    data = bytearray()
    size = digest = None
    names = client._task_fields("GetSideFile", task)[1]
    while True:
        r = client._unary("GetSideFile", pb.GetSideFileRequest(
            **names, name=name.encode("utf-8"), offset=len(data), max_bytes=_MAX_SLICE), label,
            names=names)
        if size is None:
            size, digest = r.file.size_bytes, r.file.xxh3_64
        elif (r.file.size_bytes, r.file.xxh3_64) != (size, digest):
            raise data_loss(label, "the file changed while it was read (task replaced?)")
        if r.offset != len(data) or len(r.data) > size - len(data) or (
                not r.data and len(data) < size):
            raise data_loss(label, f"bad slice at offset {len(data)} of {size} bytes")
        data += r.data
        if len(data) == size:
            break
    if xxhash.xxh3_64_intdigest(data) != digest:
        raise data_loss(label, "XXH3-64 checksum mismatch")
    return bytes(data)


def _write_atomically(path, pieces):
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            for p in pieces:
                f.write(p)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _missing_dirs(path):
    """The directories os.makedirs(path) makes, outermost first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing[::-1]


def _write_shard(path, tensors, metadata):
    """One safetensors file of [(name, proto dtype, shape, uint8 buffer)], data in the
    given order, with the header codec::WriteSafetensors writes (deltactl pull --out-dir:
    the same bytes)."""
    head = header_bytes([(name, dt, shape) for name, dt, shape, _ in tensors], metadata)
    _write_atomically(path, [head] + [memoryview(buf) for _, _, _, buf in tensors])


def pull_dir(client, task, out_dir, shard_bytes=5_000_000_000, dtype=None):
    """Writes `task` into `out_dir` (created if needed) as a Hugging Face checkpoint
    directory, byte for byte as `deltactl pull --out-dir` writes it for the same
    shard size: the merged tensors (every checksum verified) in container order packed
    greedily into model-0000i-of-0000N.safetensors shards of at most `shard_bytes` of
    tensor data (a larger tensor alone), each with the server's safetensors metadata;
    model.safetensors.index.json with "weight_map" and metadata.total_size (the sum of
    the tensors' bytes); and the task's side files, each verified. Memory: one shard
    (on the native path, Client.native, plus up to two tensors in flight). On any
    error, KeyboardInterrupt included, the directories it made are removed with what
    was written into them, and a directory that existed is left exactly as it was:
    every file is staged in a private directory inside it and renamed into place only
    once all are complete (side files, shards, the index last; only a crash during
    those renames can leave a mix). Then an earlier checkpoint's weight files that this
    one replaces go: shards of another count and a single model.safetensors.
    Returns {"shards": [...], "side_files": [...], "total_size": n}."""
    if shard_bytes <= 0:
        raise invalid_argument(f"shard_bytes must be positive, got {shard_bytes}")
    made = _missing_dirs(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        if made:
            shutil.rmtree(made[0], ignore_errors=True)
        raise from_os_error(e, f"pull_dir: cannot create the directory {out_dir}") from None
    # Every file is written and fsynced in a private staging directory first, and
    # renamed into out_dir only once all are complete (side files, shards, the index
    # last), as deltactl pull --out-dir (common::StagedFiles): a failed pull leaves a
    # checkpoint that was there as it was. Staged files are named by their position, so
    # no side file name can collide with a scratch name.
    staging = None
    try:
        staging = tempfile.mkdtemp(prefix=".deltaserve-staging-", dir=out_dir)
        return _pull_into_dir(client, task, out_dir, shard_bytes, dtype, staging)
    except BaseException:
        # A failed or interrupted (Ctrl-C) pull leaves no directory of its own making
        # behind, as deltactl pull --out-dir, and nothing of its own in one that was there.
        if made:
            shutil.rmtree(made[0], ignore_errors=True)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _pull_into_dir(client, task, out_dir, shard_bytes, dtype, staging):
    done, current, used, total = [], [], 0, 0  # done: [(staged path, [names])]
    staged = []  # [(staged path, final name)] of the side files

    def flush():
        tmp = os.path.join(staging, f"shard-{len(done)}")
        _write_shard(tmp, current, client.last_stream.metadata)
        done.append((tmp, [name for name, _, _, _ in current]))

    for tensor in client._tensor_stream(task, dtype=dtype):
        buf = tensor[3]
        if current and used + buf.size > shard_bytes:
            flush()
            current, used = [], 0
        current.append(tensor)
        used += buf.size
        total += buf.size
    flush()
    written = []
    for f in client.task_info(task).side_files:
        name = f.name
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise invalid_argument(f"the server listed side file {name!r}, not a plain file name")
        tmp = os.path.join(staging, f"side-{len(staged)}")
        _write_atomically(tmp, [get_side_file(client, task, name)])
        staged.append((tmp, name))
        written.append(name)
    weight_map, shards = {}, []
    for i, (tmp, names) in enumerate(done):
        shard = f"model-{i + 1:05d}-of-{len(done):05d}.safetensors"
        staged.append((tmp, shard))
        shards.append(shard)
        weight_map.update((n, shard) for n in names)
    metadata = dict(client.last_stream.metadata)
    metadata["total_size"] = total
    index = os.path.join(staging, "index")
    _write_atomically(index, [json_bytes({"metadata": metadata, "weight_map": weight_map})])
    staged.append((index, _INDEX))
    # Publish. Only a crash during these renames can leave a mix (each file whole).
    for tmp, name in staged:
        os.replace(tmp, os.path.join(out_dir, name))
    dir_fd = os.open(out_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    # Weight files of an earlier checkpoint that this one replaces go, as with deltactl
    # pull --out-dir and Hugging Face's save_pretrained: shards with another count, and
    # a single model.safetensors (from_pretrained would load it instead of the index).
    for name in os.listdir(out_dir):
        if (_SHARD_NAME.fullmatch(name) and name not in shards) or name == "model.safetensors":
            os.remove(os.path.join(out_dir, name))
    return {"shards": shards, "side_files": written, "total_size": total}
