//! The patch loader end to end on phantom cases: batch layout, determinism, foreground oversampling,
//! bounded memory, error propagation and shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use voxplan_volumes::case_view::{CaseView, InMemoryCase};
use voxplan_volumes::phantom::PhantomSpec;
use voxplan_volumes::source::{CaseGeometry, CaseSource, PhantomSource};
use voxplan_volumes::{AugmentConfig, Labels, LoaderConfig, PatchBatch, PatchLoader, Result, Volume, VolumeError};

fn phantoms(cases: usize, shape: [usize; 3]) -> Arc<dyn CaseSource> {
    let spec = PhantomSpec { shape, spacing: [1.0; 3], structures: 3, channels: 2, seed: 11 };
    Arc::new(PhantomSource { spec, cases })
}

fn loader_cfg(workers: usize) -> LoaderConfig {
    LoaderConfig { workers, queue_length: 4, samples_per_volume: 3, ..LoaderConfig::default() }
}

fn run(
    source: Arc<dyn CaseSource>,
    cfg: &LoaderConfig,
    batch: usize,
    batches: usize,
    seed: u64,
    epoch: u64,
) -> Vec<PatchBatch> {
    let loader = PatchLoader::start(
        source,
        vec![0, 1, 2, 3, 4],
        cfg,
        &AugmentConfig::default(),
        [16, 16, 12],
        batch,
        batches,
        seed,
        epoch,
    )
    .unwrap();
    collect(loader)
}

fn collect(mut loader: PatchLoader) -> Vec<PatchBatch> {
    let mut out = Vec::new();
    while let Some(b) = loader.next_batch() {
        out.push(b.unwrap());
    }
    out
}

#[test]
fn batches_have_the_agreed_layout_and_stop_after_the_count() {
    let batches = run(phantoms(5, [24, 24, 20]), &loader_cfg(2), 3, 7, 1, 0);
    assert_eq!(batches.len(), 7);
    for b in &batches {
        assert_eq!((b.batch_size, b.channels, b.patch_size), (3, 2, [16, 16, 12]));
        assert_eq!(b.images.len(), 3 * 2 * 16 * 16 * 12);
        assert_eq!(b.labels.len(), 3 * 16 * 16 * 12);
        assert!(b.labels.iter().all(|&l| l <= 3));
        assert!(b.images.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn same_seed_epoch_and_workers_reproduce_exactly_other_epochs_differ() {
    for workers in [1, 2, 3] {
        let a = run(phantoms(5, [24, 24, 20]), &loader_cfg(workers), 2, 6, 42, 3);
        let b = run(phantoms(5, [24, 24, 20]), &loader_cfg(workers), 2, 6, 42, 3);
        assert_eq!(a, b, "workers {workers}");
        let c = run(phantoms(5, [24, 24, 20]), &loader_cfg(workers), 2, 6, 42, 4);
        assert_ne!(a, c, "workers {workers}: epoch 4 must differ from epoch 3");
    }
}

/// A run resumed at batch k of an epoch (`start_at`) yields exactly batches k.. of the uninterrupted epoch,
/// for any worker count, and never opens a case whose patches all came before k.
#[test]
fn an_epoch_resumed_at_a_batch_continues_exactly_where_it_stopped() {
    let epoch = |source: Arc<Counting>, workers: usize, first: usize| {
        let cfg = loader_cfg(workers);
        let aug = AugmentConfig::default();
        let loader =
            PatchLoader::start_at(source, (0..6).collect(), &cfg, &aug, [16, 16, 12], 2, 9, 4, 3, first).unwrap();
        collect(loader)
    };
    for workers in 1..=3 {
        let (whole_source, _) = counting(None);
        let whole = epoch(whole_source.clone(), workers, 0);
        let opened_whole = whole_source.opened.load(Ordering::SeqCst);
        assert_eq!(whole.len(), 9);
        for first in [1, 4, 8, 9] {
            let (source, _) = counting(None);
            let resumed = epoch(source.clone(), workers, first);
            assert_eq!(resumed.len(), 9 - first, "workers {workers}, first {first}");
            assert!(resumed == whole[first..], "workers {workers}, first {first}: the same batches from there on");
            let opened = source.opened.load(Ordering::SeqCst);
            // Batch 4 starts at patch 8: with 3 patches per visit, at least the first two visits are skipped.
            let skips = first >= 4;
            assert!(
                opened <= opened_whole && (!skips || opened < opened_whole),
                "workers {workers}, first {first}: {opened} of {opened_whole} opened"
            );
            if first == 9 {
                assert_eq!(opened, 0, "nothing left to draw, nothing opened");
            }
        }
    }
}

#[test]
fn foreground_fraction_one_puts_foreground_in_every_patch() {
    let cfg = LoaderConfig { foreground_fraction: 1.0, ..loader_cfg(2) };
    // Large background, small patch: uniform patches would often miss every structure.
    let batches = run(phantoms(5, [64, 64, 64]), &cfg, 2, 10, 5, 0);
    let n = 16 * 16 * 12;
    for b in &batches {
        for p in 0..2 {
            assert!(b.labels[p * n..(p + 1) * n].iter().any(|&l| l > 0), "patch without foreground");
        }
    }
    let uniform = LoaderConfig { foreground_fraction: 0.0, ..loader_cfg(2) };
    let misses: usize = run(phantoms(5, [64, 64, 64]), &uniform, 2, 10, 5, 0)
        .iter()
        .map(|b| (0..2).filter(|p| b.labels[p * n..(p + 1) * n].iter().all(|&l| l == 0)).count())
        .sum();
    assert!(misses > 0, "the comparison needs uniform patches that miss foreground");
}

#[test]
fn patches_larger_than_the_volume_are_padded() {
    let cfg = loader_cfg(1);
    let loader = PatchLoader::start(
        phantoms(2, [10, 8, 6]),
        vec![0, 1],
        &cfg,
        &AugmentConfig::default(),
        [16, 16, 12],
        1,
        3,
        0,
        0,
    )
    .unwrap();
    for b in collect(loader) {
        let background_or_pad = b.labels.iter().filter(|&&l| l == 0).count();
        assert!(background_or_pad >= 16 * 16 * 12 - 10 * 8 * 6);
    }
}

#[test]
fn buffer_reuse_never_leaks_into_batches_whatever_the_queue_length() {
    // Queue length changes how often a worker cuts into a patch handed back by the consumer (and into the
    // previous case's buffers) versus fresh memory, never what a patch holds. Cases of two sizes, with
    // patches hanging over the border of the smaller one, so stale values would show up in the padding.
    let spec = PhantomSpec { shape: [18, 16, 12], spacing: [1.0; 3], structures: 3, channels: 2, seed: 5 };
    let small = PhantomSpec { shape: [12, 10, 9], ..spec.clone() };
    struct TwoSizes(PhantomSource, PhantomSource);
    impl CaseSource for TwoSizes {
        fn len(&self) -> usize {
            6
        }
        fn case_id(&self, i: usize) -> String {
            format!("case_{i}")
        }
        fn load(&self, i: usize) -> Result<(Volume, Labels)> {
            if i.is_multiple_of(2) { self.0.load(i) } else { self.1.load(i) }
        }
        fn geometry(&self, i: usize) -> Result<CaseGeometry> {
            if i.is_multiple_of(2) { self.0.geometry(i) } else { self.1.geometry(i) }
        }
        fn label_space(&self) -> voxplan_volumes::LabelSpace {
            self.0.label_space()
        }
    }
    let source: Arc<dyn CaseSource> =
        Arc::new(TwoSizes(PhantomSource { spec, cases: 6 }, PhantomSource { spec: small, cases: 6 }));
    let run_with = |workers: usize, queue_length: usize| {
        let cfg = LoaderConfig { workers, queue_length, samples_per_volume: 3, ..LoaderConfig::default() };
        let aug = AugmentConfig { noise_probability: 0.5, ..AugmentConfig::default() };
        let loader =
            PatchLoader::start(source.clone(), (0..6).collect(), &cfg, &aug, [14, 14, 10], 2, 9, 7, 1).unwrap();
        collect(loader)
    };
    for workers in [1, 2] {
        let reference = run_with(workers, 1);
        assert_eq!(run_with(workers, 16), reference, "workers {workers}: queue 16 vs 1");
        assert_eq!(run_with(workers, 3), reference, "workers {workers}: queue 3 vs 1");
    }
}

/// Wraps phantoms, counting how many opened cases are alive at once.
struct Counting {
    inner: PhantomSource,
    /// Cases opened so far.
    opened: AtomicUsize,
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    fail_case: Option<usize>,
}

struct CountedView {
    inner: InMemoryCase,
    live: Arc<AtomicUsize>,
}

impl CaseView for CountedView {
    fn shape(&self) -> [usize; 3] {
        self.inner.shape()
    }
    fn channels(&self) -> usize {
        self.inner.channels()
    }
    fn labels(&self) -> &Labels {
        self.inner.labels()
    }
    fn image_patch(&mut self, origin: [isize; 3], size: [usize; 3]) -> Result<Vec<f32>> {
        self.inner.image_patch(origin, size)
    }
    fn resident_bytes(&self) -> u64 {
        self.inner.resident_bytes()
    }
}

impl Drop for CountedView {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl CaseSource for Counting {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn case_id(&self, i: usize) -> String {
        self.inner.case_id(i)
    }
    fn label_space(&self) -> voxplan_volumes::LabelSpace {
        self.inner.label_space()
    }
    fn load(&self, i: usize) -> Result<(Volume, Labels)> {
        if Some(i) == self.fail_case {
            return Err(VolumeError::Dataset { path: format!("case{i}.nii.gz").into(), problem: "unreadable".into() });
        }
        self.inner.load(i)
    }
    fn geometry(&self, i: usize) -> Result<CaseGeometry> {
        self.inner.geometry(i)
    }
    fn open_case(&self, i: usize, _streamed: bool) -> Result<Box<dyn CaseView>> {
        let (volume, labels) = self.load(i)?;
        self.opened.fetch_add(1, Ordering::SeqCst);
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Ok(Box::new(CountedView { inner: InMemoryCase { volume, labels }, live: Arc::clone(&self.live) }))
    }
}

fn counting(fail_case: Option<usize>) -> (Arc<Counting>, Arc<AtomicUsize>) {
    let spec = PhantomSpec { shape: [20, 20, 20], spacing: [1.0; 3], structures: 3, channels: 1, seed: 2 };
    let peak = Arc::new(AtomicUsize::new(0));
    let src = Counting {
        inner: PhantomSource { spec, cases: 6 },
        opened: AtomicUsize::new(0),
        live: Arc::new(AtomicUsize::new(0)),
        peak: Arc::clone(&peak),
        fail_case,
    };
    (Arc::new(src), peak)
}

#[test]
fn at_most_one_case_per_worker_is_alive_and_the_bound_is_reported() {
    let (src, peak) = counting(None);
    let cfg = LoaderConfig { workers: 2, queue_length: 2, samples_per_volume: 1, ..LoaderConfig::default() };
    let loader =
        PatchLoader::start(src, (0..6).collect(), &cfg, &AugmentConfig::default(), [8, 8, 8], 2, 12, 0, 0).unwrap();
    let case = 20 * 20 * 20 * (4 + 2);
    assert!(loader.memory_bound_bytes() >= 2 * case as u64, "{} bytes", loader.memory_bound_bytes());
    assert_eq!(collect(loader).len(), 12);
    assert!(peak.load(Ordering::SeqCst) <= 2, "peak {} live cases", peak.load(Ordering::SeqCst));
}

#[test]
fn a_failing_case_surfaces_as_an_error_naming_its_file_then_the_loader_ends() {
    let (src, _) = counting(Some(3));
    let cfg = LoaderConfig { workers: 2, queue_length: 2, samples_per_volume: 2, ..LoaderConfig::default() };
    let mut loader =
        PatchLoader::start(src, (0..6).collect(), &cfg, &AugmentConfig::default(), [8, 8, 8], 1, 12, 0, 0).unwrap();
    let mut error = None;
    while let Some(b) = loader.next_batch() {
        if let Err(e) = b {
            error = Some(e.to_string());
        }
    }
    let error = error.expect("case 3 is in every epoch's order");
    assert!(error.contains("case3.nii.gz"), "{error}");
}

#[test]
fn dropping_mid_epoch_stops_the_workers() {
    let cfg = loader_cfg(2);
    let mut loader = PatchLoader::start(
        phantoms(5, [24, 24, 20]),
        vec![0, 1, 2],
        &cfg,
        &AugmentConfig::default(),
        [16, 16, 12],
        2,
        1000,
        0,
        0,
    )
    .unwrap();
    assert!(loader.next_batch().is_some());
    drop(loader); // must return: workers blocked on full queues see the hang-up
}

#[test]
fn bad_settings_are_config_errors() {
    let src = phantoms(2, [8, 8, 8]);
    let aug = AugmentConfig::default();
    let zero_workers = LoaderConfig { workers: 0, ..LoaderConfig::default() };
    assert!(matches!(
        PatchLoader::start(src.clone(), vec![0], &zero_workers, &aug, [4; 3], 1, 1, 0, 0),
        Err(VolumeError::Config { .. })
    ));
    assert!(matches!(
        PatchLoader::start(src.clone(), vec![5], &LoaderConfig::default(), &aug, [4; 3], 1, 1, 0, 0),
        Err(VolumeError::Config { .. })
    ));
    assert!(matches!(
        PatchLoader::start(src, vec![], &LoaderConfig::default(), &aug, [4; 3], 1, 1, 0, 0),
        Err(VolumeError::Config { .. })
    ));
}

/// The ranks of data-parallel training split every global batch: rank `r` of `R` yields positions
/// `r·B/R ..` of each batch the whole loader yields, resumed or not, so the ranks together train on exactly
/// the patches one device would, and no patch twice.
#[test]
fn shards_split_every_global_batch_between_the_ranks() {
    use voxplan_volumes::Shard;
    let aug = AugmentConfig { noise_probability: 0.5, ..AugmentConfig::default() };
    let cfg = LoaderConfig { foreground_fraction: 0.5, ..loader_cfg(2) };
    let start = |batch: usize, first: usize, shard: Shard| {
        let src = phantoms(5, [24, 24, 20]);
        collect(
            PatchLoader::start_shard(src, (0..5).collect(), &cfg, &aug, [16, 16, 12], batch, 6, 9, 2, first, shard)
                .unwrap(),
        )
    };
    let voxels = 16 * 16 * 12;
    for (batch, ranks) in [(2, 2), (4, 2), (6, 3), (4, 4)] {
        for first in [0, 1, 5] {
            let whole = start(batch, first, Shard::WHOLE);
            let parts: Vec<Vec<PatchBatch>> =
                (0..ranks).map(|rank| start(batch, first, Shard { rank, ranks })).collect();
            let per_rank = batch / ranks;
            for (i, global) in whole.iter().enumerate() {
                for (rank, part) in parts.iter().enumerate() {
                    let mine = &part[i];
                    assert_eq!(mine.batch_size, per_rank);
                    let at = rank * per_rank;
                    assert!(
                        mine.labels[..] == global.labels[at * voxels..(at + per_rank) * voxels]
                            && mine.images[..] == global.images[at * 2 * voxels..(at + per_rank) * 2 * voxels],
                        "batch {batch}, {ranks} ranks, first {first}: rank {rank}'s part of global batch {i}"
                    );
                }
            }
            assert!(parts.iter().all(|p| p.len() == whole.len()), "batch {batch}, {ranks} ranks, first {first}");
        }
    }
    let odd = PatchLoader::start_shard(
        phantoms(2, [24; 3]),
        vec![0],
        &cfg,
        &aug,
        [8; 3],
        3,
        1,
        0,
        0,
        0,
        Shard { rank: 0, ranks: 2 },
    );
    assert!(matches!(odd, Err(VolumeError::Config { .. })), "a global batch of 3 does not split over 2 ranks");
}
