//! Section 1: finding one session among 100 000, with and without the index, in the library
//! and as a whole `baton exec resume` process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_protocol::ThreadId;
use baton_store::{FileStore, ListQuery, LookupMethod};
use chrono::{DateTime, Utc};

use crate::Bench;
use crate::generate::{epoch, rollout_path, small_session, thread_id_at, write_transcript};
use crate::process::run_measured;
use crate::report::{Report, Verdict};
use crate::rng::Rng;
use crate::stats::{duration, median, percentile};

const SECTION: &str = "lookup";
/// Bump when the generated content changes, so cached stores are regenerated.
const STORE_VERSION: &str = "bench-store v1";
/// The sessions spread over this many days (about 250 per day folder at 100 000).
const DAYS: i64 = 400;
const RESUME_RUNS: usize = 5;

/// The id and start time of generated session `index` of `count`, and the generator that
/// writes its content; a pure function, so ids can be recomputed without the disk.
pub(crate) fn session_spec(
    index: usize,
    count: usize,
) -> anyhow::Result<(ThreadId, DateTime<Utc>, Rng)> {
    let mut rng = Rng::new(0xBA70_0000_0000 + index as u64);
    let span_ms = DAYS * 86_400_000;
    let offset = span_ms * index as i64 / count as i64 + rng.below(60_000) as i64;
    let started = epoch() + chrono::Duration::milliseconds(offset);
    let id = thread_id_at(started, &mut rng)?;
    Ok((id, started, rng))
}

pub(crate) struct GeneratedStore {
    pub(crate) home: PathBuf,
    pub(crate) project: PathBuf,
}

/// The cached store of `count` sessions under `target/`, generated if missing or stale.
pub(crate) fn ensure_store(bench: &Bench, count: usize) -> anyhow::Result<GeneratedStore> {
    let root = if count == 100_000 {
        bench.target.join("bench-store-100k")
    } else {
        bench.target.join(format!("bench-store-{count}"))
    };
    let home = root.join("home");
    let project = root.join("project");
    let version_file = root.join("VERSION");
    let version = format!(
        "{STORE_VERSION} sessions={count} project={}",
        project.display()
    );
    if std::fs::read_to_string(&version_file).ok().as_deref() == Some(version.as_str()) {
        eprintln!("  using the cached store {}", root.display());
        return Ok(GeneratedStore { home, project });
    }
    if root.exists() {
        fs_err::remove_dir_all(&root)?;
    }
    fs_err::create_dir_all(&project)?;
    let sessions = home.join("sessions");
    let started = Instant::now();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let (sessions, project) = (&sessions, &project);
                scope.spawn(move || -> anyhow::Result<()> {
                    for index in (worker..count).step_by(workers) {
                        let (id, started, mut rng) = session_spec(index, count)?;
                        let bytes = small_session(id, started, project, &mut rng)?;
                        write_transcript(&rollout_path(sessions, started, id), &bytes)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        Ok(())
    })?;
    eprintln!(
        "  generated {count} sessions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    fs_err::write(&version_file, version)?;
    Ok(GeneratedStore { home, project })
}

fn remove_index(home: &Path) -> anyhow::Result<()> {
    for name in ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm"] {
        let path = home.join(name);
        if path.exists() {
            fs_err::remove_file(path)?;
        }
    }
    Ok(())
}

/// `count` distinct random session indices.
pub(crate) fn sample(count: usize, wanted: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < wanted.min(count) {
        chosen.insert(rng.below(count));
    }
    let mut chosen: Vec<usize> = chosen.into_iter().collect();
    // Visit them in random order, not sorted by day.
    for i in (1..chosen.len()).rev() {
        chosen.swap(i, rng.below(i + 1));
    }
    chosen
}

/// Times `locate` for each id and checks how it was found.
fn time_locate(
    store: &FileStore,
    ids: &[ThreadId],
    expected: LookupMethod,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(ids.len());
    for &id in ids {
        let started = Instant::now();
        let located = store.locate(id)?;
        times.push(started.elapsed());
        if located.via != expected {
            bail!("{id} was found by {:?}, expected {expected:?}", located.via);
        }
    }
    Ok(times)
}

/// `baton exec resume <id> RECALL`, spawn to exit; checks the answer.
fn resume(
    bench: &Bench,
    home: &Path,
    cwd: &Path,
    id: ThreadId,
) -> anyhow::Result<crate::process::Measured> {
    let measured =
        run_measured(
            bench
                .baton(home, cwd)
                .args(["exec", "resume", &id.to_string(), "RECALL"]),
        )?
        .ok("baton exec resume")?;
    if !measured.stdout.starts_with("recall:") {
        bail!(
            "unexpected answer from baton exec resume: {}",
            measured.stdout
        );
    }
    Ok(measured)
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let count = bench.sessions;
    let store_dir = ensure_store(bench, count)?;
    let (home, project) = (&store_dir.home, &store_dir.project);
    bench.write_config(home, None)?;
    let id_of = |index: usize| session_spec(index, count).map(|(id, _, _)| id);

    // The index is rebuilt first: it also repairs a cached store left without one.
    let reindex = run_measured(bench.baton(home, project).args(["sessions", "reindex"]))?
        .ok("baton sessions reindex")?;
    report.info(
        SECTION,
        format!("`baton sessions reindex` of {count} sessions (whole process)"),
        duration(reindex.elapsed),
    );

    // With the index.
    let store = FileStore::open(home)?;
    store.locate(id_of(0)?)?; // opens the index
    let ids: Vec<ThreadId> = sample(count, 1_000, 1)
        .into_iter()
        .map(id_of)
        .collect::<anyhow::Result<_>>()?;
    let times = time_locate(&store, &ids, LookupMethod::Index)?;
    let p50 = percentile(&times, 50.0);
    report.add(
        SECTION,
        format!("`locate` with the index, p50 ({} ids)", ids.len()),
        duration(p50),
        "< 5 ms",
        Verdict::of(p50 < Duration::from_millis(5)),
    );
    report.info(
        SECTION,
        "`locate` with the index, p99",
        duration(percentile(&times, 99.0)),
    );

    // `baton-sessions` text search: a word no session holds reads every row's text.
    let searches: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            store
                .list(&ListQuery {
                    text: Some("zyzzyva-not-there".to_owned()),
                    ..ListQuery::default()
                })
                .map(|_| started.elapsed())
        })
        .collect::<Result<_, _>>()?;
    let search = median(&searches);
    report.add(
        SECTION,
        format!(
            "text search over every prompt and answer of {count} sessions, no match (median of 5)"
        ),
        duration(search),
        "< 1 s",
        Verdict::of(search < Duration::from_secs(1)),
    );

    let mut resume_ids = sample(count, 3 * RESUME_RUNS, 2).into_iter();
    let mut next_resume_id =
        || -> anyhow::Result<ThreadId> { id_of(resume_ids.next().context("out of sample ids")?) };
    let mut with_index = Vec::new();
    for _ in 0..RESUME_RUNS {
        with_index.push(resume(bench, home, project, next_resume_id()?)?.elapsed);
    }
    report.info(
        SECTION,
        format!(
            "`exec resume` among {count}, index present (whole process, median of {RESUME_RUNS})"
        ),
        duration(median(&with_index)),
    );

    // A session the index never saw, in a day folder its id does not name: the full scan.
    let strays = write_strays(home, project, 2 * RESUME_RUNS)?;
    let times = time_locate(&store, &strays[..RESUME_RUNS], LookupMethod::FullScan)?;
    report.add(
        SECTION,
        format!("`locate`, never indexed, wrong day folder (full scan), median of {RESUME_RUNS}"),
        duration(median(&times)),
        "< 1 s",
        Verdict::of(median(&times) < Duration::from_secs(1)),
    );
    let mut stray_resumes = Vec::new();
    for &id in &strays[RESUME_RUNS..] {
        stray_resumes.push(resume(bench, home, project, id)?.elapsed);
    }
    report.info(
        SECTION,
        format!("`exec resume`, never indexed, wrong day folder (whole process, median of {RESUME_RUNS})"),
        duration(median(&stray_resumes)),
    );
    fs_err::remove_dir_all(home.join("sessions").join(STRAY_YEAR))?;
    drop(store);

    // Without the index: the UUID v7 day hint.
    remove_index(home)?;
    let store = FileStore::open(home)?;
    let ids: Vec<ThreadId> = sample(count, 200, 3)
        .into_iter()
        .map(id_of)
        .collect::<anyhow::Result<_>>()?;
    let times = time_locate(&store, &ids, LookupMethod::DayFolder)?;
    let p99 = percentile(&times, 99.0);
    report.add(
        SECTION,
        format!(
            "`locate`, index deleted (day folder), p50 ({} ids)",
            ids.len()
        ),
        duration(percentile(&times, 50.0)),
        "< 1 s",
        Verdict::of(percentile(&times, 50.0) < Duration::from_secs(1)),
    );
    report.add(
        SECTION,
        "`locate`, index deleted (day folder), p99",
        duration(p99),
        "< 1 s",
        Verdict::of(p99 < Duration::from_secs(1)),
    );
    drop(store);
    let mut without_index = Vec::new();
    for _ in 0..RESUME_RUNS {
        remove_index(home)?;
        let measured = resume(bench, home, project, next_resume_id()?)?;
        without_index.push(measured.elapsed);
    }
    let whole = median(&without_index);
    report.add(
        SECTION,
        format!(
            "`exec resume` among {count}, index deleted (whole process, median of {RESUME_RUNS})"
        ),
        duration(whole),
        "< 1 s",
        Verdict::of(whole < Duration::from_secs(1)),
    );
    remove_index(home)?;
    let peak = crate::process::peak_rss_kb(bench.baton(home, project).args([
        "exec",
        "resume",
        &next_resume_id()?.to_string(),
        "RECALL",
    ]))?;
    report.info(
        SECTION,
        "max RSS of an `exec resume` (index deleted)",
        crate::stats::memory_kb(peak),
    );

    // A home with a single session.
    let single = bench.scratch.join("single-home");
    bench.write_config(&single, None)?;
    let (id, started, mut rng) = session_spec(0, count)?;
    let bytes = small_session(id, started, project, &mut rng)?;
    write_transcript(&rollout_path(&single.join("sessions"), started, id), &bytes)?;
    let mut one = Vec::new();
    for _ in 0..RESUME_RUNS {
        one.push(resume(bench, &single, project, id)?.elapsed);
    }
    report.info(
        SECTION,
        format!("`exec resume`, a home with 1 session (whole process, median of {RESUME_RUNS})"),
        duration(median(&one)),
    );

    // Leave the cached store indexed for the next run; the library call is a second figure.
    let store = FileStore::open(home)?;
    let started = Instant::now();
    let reindexed = store.reindex()?;
    report.info(
        SECTION,
        format!(
            "`FileStore::reindex` of {} sessions (library call)",
            reindexed.found
        ),
        duration(started.elapsed()),
    );
    if reindexed.found != count {
        report.note(format!(
            "reindex found {} transcripts where {count} were generated",
            reindexed.found
        ));
    }
    Ok(())
}

/// Where the never-indexed sessions go: a day folder far from the one their ids name.
const STRAY_YEAR: &str = "2019";

fn write_strays(home: &Path, project: &Path, count: usize) -> anyhow::Result<Vec<ThreadId>> {
    let mut rng = Rng::new(0x57A7);
    let folder = home.join("sessions").join(STRAY_YEAR).join("01").join("01");
    let mut ids = Vec::new();
    for index in 0..count {
        let started = epoch() + chrono::Duration::days(100 + index as i64);
        let id = thread_id_at(started, &mut rng)?;
        let bytes = small_session(id, started, project, &mut rng)?;
        let name = rollout_path(Path::new(""), started, id);
        let file_name = name.file_name().context("a rollout file name")?;
        write_transcript(&folder.join(file_name), &bytes)?;
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_specs_are_deterministic_and_spread_over_days() {
        let (a, a_time, _) = session_spec(0, 1000).expect("spec");
        let (b, _, _) = session_spec(0, 1000).expect("spec");
        assert_eq!(a, b);
        let (_, last_time, _) = session_spec(999, 1000).expect("spec");
        assert!((last_time - a_time).num_days() >= DAYS - 2);
        assert_eq!(
            a.created_at().map(|t| t.timestamp_millis()),
            Some(a_time.timestamp_millis())
        );
    }

    #[test]
    fn samples_are_distinct_and_in_range() {
        let picked = sample(50, 20, 9);
        assert_eq!(picked.len(), 20);
        let unique: std::collections::HashSet<_> = picked.iter().collect();
        assert_eq!(unique.len(), 20);
        assert!(picked.iter().all(|&i| i < 50));
        assert_eq!(sample(5, 20, 9).len(), 5);
    }

    #[test]
    fn strays_are_found_only_by_the_full_scan() {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path().join("home");
        let store = FileStore::open(&home).expect("store");
        let ids = write_strays(&home, dir.path(), 2).expect("strays");
        let times = time_locate(&store, &ids, LookupMethod::FullScan).expect("locate");
        assert_eq!(times.len(), 2);
    }
}
