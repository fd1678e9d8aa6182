"""The check of a whole shard set: every shard present, the index agreeing, labels in range; cached.

`training.shards.load_shards` runs it before training, the shard equivalent of
the folder loader's decode check: every record is read once and its image fully
decoded (`shard_format.check_shard`); a record that is not an image is skipped
and reported, a shard whose TFRecord framing is corrupt is read up to the damage
and the rest reported. The verdicts are kept in `<dir>/CHECK_CACHE`
(training.check_cache), valid while a shard's size and mtime are unchanged, so
a second run reads no image. Mistakes in the set itself (a missing shard, an
index that disagrees with the shards, a label outside the class range) raise
`ShardError` (one line, exit code 2) before training.
"""

from __future__ import annotations

import concurrent.futures
import os

from training import check_cache
from training.shard_format import INDEX, SHARD_NAME, SPLITS, ShardCheck, ShardError, check_shard, shard_name

CHECK_CACHE = ".shards_check.json"
CHECK_CACHE_VERSION = 1


def list_shards(data_dir: str, prefix: str) -> list[str]:
    """The shard files of one split, sorted; ShardError when one is missing or the `-of-N` parts disagree."""
    found = {}
    for name in os.listdir(data_dir):
        m = SHARD_NAME.match(name)
        if m and m.group(1) == prefix:
            found[name] = (int(m.group(2)), int(m.group(3)))
    if not found:
        raise ShardError("data_dir", data_dir, f"{prefix}-NNNNN-of-NNNNN TFRecord shards (none found)")
    totals = sorted({total for _, total in found.values()})
    if len(totals) > 1:
        raise ShardError(
            "data_dir",
            data_dir,
            f"one shard set per split ({prefix} shards say -of-{', -of-'.join(str(t) for t in totals)})",
        )
    total = totals[0]
    missing = sorted(set(range(total)) - {i for i, _ in found.values()})
    if missing:
        names = ", ".join(shard_name(prefix, i, total) for i in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise ShardError(
            "data_dir",
            data_dir,
            f"all {total} {prefix} shards that their names announce "
            f"({len(found)} found; missing {len(missing)}: {names})",
        )
    return [os.path.join(data_dir, n) for n in sorted(found)]


def checked_shards(data_dir: str, paths: list[str], *, workers: int | None = None) -> dict[str, ShardCheck]:
    """{path: ShardCheck}, reading only the shards the cache file does not vouch for (size and mtime in ns).

    The cache is `<data_dir>/CHECK_CACHE`, written atomically; a folder that
    cannot be written is checked in full every time (correct, only slower).
    """
    cache_path = os.path.join(data_dir, CHECK_CACHE)
    entries = check_cache.load(cache_path, CHECK_CACHE_VERSION, "shards")
    results, stats, todo = {}, {}, []
    for path in paths:
        stats[path] = check_cache.stamp(path)
        entry = entries.get(os.path.basename(path))
        try:
            if entry and entry["stat"] == stats[path]:
                results[path] = ShardCheck.from_json(entry["check"])
                continue
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
        todo.append(path)
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
            results.update(zip(todo, pool.map(check_shard, todo)))
        fresh = dict(entries)
        fresh.update({os.path.basename(p): {"stat": stats[p], "check": results[p].as_json()} for p in todo})
        check_cache.save(cache_path, CHECK_CACHE_VERSION, "shards", fresh)
    return results


def check_against_index(data_dir, index, paths, checks) -> None:
    """ShardError unless the index lists exactly the shards on disk, each with its record count and sha256."""
    for split, prefix in SPLITS.items():
        listed = index.get("splits", {}).get(prefix, {}).get("shards", {})
        on_disk = {os.path.basename(p): p for p in paths[split]}
        if set(listed) != set(on_disk):
            extra, absent = sorted(set(on_disk) - set(listed)), sorted(set(listed) - set(on_disk))
            raise ShardError(
                "data_dir",
                data_dir,
                f"the {prefix} shards that {INDEX} lists (not listed: "
                f"{extra[:3] or 'none'}; listed but absent: {absent[:3] or 'none'})",
            )
        for name, entry in sorted(listed.items()):
            check = checks[on_disk[name]]
            if entry.get("count") != check.count or entry.get("sha256") != check.sha256:
                what = (
                    f"{entry.get('count')} records, it has {check.count}"
                    if entry.get("count") != check.count
                    else "another sha256: the file changed after it was written"
                )
                raise ShardError("data_dir", data_dir, f"shards that match {INDEX} ({INDEX} gives {name} {what})")


def class_names(data_dir, index, checks, offset) -> list[str]:
    """The index's classes; else the synsets in label order (all labels then must be offset..offset+n-1);
    else "0".."n-1" up to the largest label."""
    if index is not None:
        return list(index["classes"])
    by_label = {}
    for check in checks.values():
        for label, synset in check.synsets.items():
            if by_label.setdefault(label, synset) != synset:
                raise ShardError(
                    "data_dir", data_dir, f"one synset per label (label {label} has {by_label[label]!r} and {synset!r})"
                )
    if by_label:
        return [by_label[label] for label in sorted(by_label)]
    labels = {label for c in checks.values() for label in c.labels}
    return [str(i) for i in range(max(labels) - offset + 1)] if labels else []
