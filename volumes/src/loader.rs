//! The streaming patch loader: worker threads open cases, draw `samples_per_volume` patches from each,
//! augment them and hand them over through bounded queues, so decoding overlaps training and memory stays
//! bounded however large the dataset.
//!
//! **Schedule.** The epoch's case order is a seeded shuffle of the training cases (reshuffled each time it
//! repeats). Visit `v` (one opened case) belongs to worker `v mod W`, and each worker has its own bounded
//! queue. Visits are taken in rounds of `W`; inside a round the stream interleaves the round's cases sample
//! by sample (`s·R + i`), so a batch mixes cases. Because the consumer knows which worker produces each
//! sequence number and each worker produces its items in exactly that order, batches come out identical for
//! a given `(seed, epoch, workers)` whatever the thread timing, without a reorder buffer. Each patch's
//! randomness is keyed by `(seed, epoch, visit, case, sample)`.
//!
//! **Shards.** Data-parallel training splits every global batch of `B` patches between `R` ranks: rank `r`
//! takes positions `r·B/R .. (r+1)·B/R` of each batch ([`Shard`]). Its workers produce only those sequence
//! numbers, with the same per-patch keys, so `R` ranks together see exactly the patches one loader of batch
//! `B` yields, and no two ranks the same one. Foreground placement is keyed by the global batch `B`.
//!
//! **Memory bound.** `W × (largest case + its class locations + two patches + the kept compressed-file
//! buffer) + queue_length × patch + one batch`, computed from headers before any decoding and logged at
//! start. A case counts as the view that opens it holds it: 8/16-bit cases in their stored type
//! ([`crate::stored_case::StoredCase`]: an int16 case is half its `f32` size), others as `f32`, streamed ones
//! as their label map ([`CaseSource::case_bytes`]). The compressed-file buffer is what each decoding thread
//! keeps between reads (at most [`COMPRESSED_SPARE_MAX_BYTES`]). The second patch per worker is
//! the recycled one: the consumer hands each patch's buffers back to its worker after copying it into the
//! batch (at most [`RECYCLED_PER_WORKER`] waiting), so a worker cuts into memory that is already mapped
//! instead of faulting in 33 MB of fresh pages per 4-channel 128³ patch. When none is waiting and the
//! worker's queue is empty, the consumer is copying the worker's last patch right now, so the worker waits
//! for it rather than allocate: the kernel zeroing a fresh patch costs far more CPU than that copy takes.
//! Only when patches sit in the queue (the consumer is the slower side) does a worker allocate more.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use rand::seq::SliceRandom;

use crate::augment::{add_gaussian_noise, draw};
use crate::config::{AugmentConfig, LoaderConfig};
use crate::crop::crop_transformed;
use crate::error::{Result, VolumeError};
use crate::nifti::{COMPRESSED_SPARE_MAX_BYTES, zeroed_f32, zeroed_u16};
use crate::sampler::{ClassLocations, Placement, choose_origin, forced_foreground};
use crate::seed::{domain, rng_for};
use crate::source::CaseSource;
use crate::volume::voxel_count;

/// A batch of patches in the layout burn wants.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchBatch {
    /// `[B, C, z, y, x]`.
    pub images: Vec<f32>,
    /// `[B, z, y, x]`.
    pub labels: Vec<u16>,
    pub batch_size: usize,
    pub channels: usize,
    /// `(x, y, z)`.
    pub patch_size: [usize; 3],
}

/// Patch buffers a worker may hold back from the consumer for reuse (see the module documentation).
pub const RECYCLED_PER_WORKER: usize = 1;

/// One augmented patch.
struct Patch {
    image: Vec<f32>,
    labels: Vec<u16>,
    channels: usize,
}

impl Patch {
    /// A recycled patch resized for `channels` × `voxels`, or fresh buffers (huge pages advised) when there
    /// is none or its size differs. Every voxel is overwritten by the cut, so stale contents never leak.
    fn reuse_or_new(recycled: Option<Patch>, channels: usize, voxels: usize) -> Patch {
        match recycled {
            Some(p) if p.image.len() == channels * voxels && p.labels.len() == voxels => Patch { channels, ..p },
            _ => Patch { image: zeroed_f32(channels * voxels), labels: zeroed_u16(voxels), channels },
        }
    }
}

/// Which case each visit opens, and which worker owns which sequence number.
#[derive(Debug, Clone)]
struct Schedule {
    visits: Vec<usize>,
    workers: usize,
    samples_per_volume: usize,
    total: u64,
}

impl Schedule {
    fn new(cases: &[usize], workers: usize, samples_per_volume: usize, total: u64, seed: u64, epoch: u64) -> Self {
        let n_visits = (total as usize).div_ceil(samples_per_volume);
        let mut visits = Vec::with_capacity(n_visits);
        let mut cycle = 0u64;
        while visits.len() < n_visits {
            let mut order = cases.to_vec();
            order.shuffle(&mut rng_for(&[domain::CASE_ORDER, seed, epoch, cycle]));
            visits.extend(order.into_iter().take(n_visits - visits.len()));
            cycle += 1;
        }
        Self { visits, workers, samples_per_volume, total }
    }

    /// Visits in round `r` (the last round may be short).
    fn round_len(&self, round: usize) -> usize {
        self.workers.min(self.visits.len() - round * self.workers)
    }

    /// Sequence number of sample `s` of visit `v`.
    fn sequence(&self, visit: usize, sample: usize) -> u64 {
        let round = visit / self.workers;
        let start = round * self.workers * self.samples_per_volume;
        (start + sample * self.round_len(round) + visit % self.workers) as u64
    }

    /// The worker that produces sequence number `n`.
    fn worker_of(&self, n: u64) -> usize {
        let per_round = (self.workers * self.samples_per_volume) as u64;
        let round = (n / per_round) as usize;
        ((n % per_round) as usize) % self.round_len(round)
    }
}

/// One rank's part of every global batch (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub ranks: usize,
}

impl Shard {
    /// The whole stream: one rank.
    pub const WHOLE: Shard = Shard { rank: 0, ranks: 1 };

    /// Whether sequence number `n` belongs to this rank, for a global batch of `batch` patches.
    fn owns(&self, n: u64, batch: usize) -> bool {
        let per_rank = (batch / self.ranks) as u64;
        (n % batch as u64) / per_rank == self.rank as u64
    }

    /// The first sequence number at or after `n` that belongs to this rank.
    fn next_owned(&self, n: u64, batch: usize) -> u64 {
        let (batch, per_rank) = (batch as u64, (batch / self.ranks) as u64);
        let (base, position) = (n - n % batch, n % batch);
        let (lo, hi) = (self.rank as u64 * per_rank, (self.rank as u64 + 1) * per_rank);
        if position < lo {
            base + lo
        } else if position < hi {
            n
        } else {
            base + batch + lo
        }
    }
}

/// Everything a worker needs, shared read-only.
struct WorkerPlan {
    source: Arc<dyn CaseSource>,
    schedule: Schedule,
    /// The first sequence number produced: a run resumed mid-epoch skips what it already trained on.
    first: u64,
    loader: LoaderConfig,
    augment: AugmentConfig,
    patch_size: [usize; 3],
    /// The global batch: what foreground placement and the shard are keyed by.
    batch_size: usize,
    shard: Shard,
    seed: u64,
    epoch: u64,
}

impl WorkerPlan {
    fn placement(&self, sequence: u64) -> Placement {
        match &self.loader.class_weights {
            Some(w) => Placement::ClassWeighted(w.clone()),
            None if forced_foreground(sequence, self.batch_size, self.loader.foreground_fraction) => {
                Placement::Foreground
            }
            None => Placement::Uniform,
        }
    }

    /// Produces this worker's items in consumption order; stops quietly when the consumer hangs up.
    fn run(&self, worker: usize, out: Sender<Result<Patch>>, recycled: Receiver<Patch>) {
        let voxels = voxel_count(self.patch_size);
        let mut sent_any = false;
        for visit in (worker..self.schedule.visits.len()).step_by(self.schedule.workers) {
            let case = self.schedule.visits[visit];
            let wanted = |sample: usize| {
                let n = self.schedule.sequence(visit, sample);
                (self.first..self.schedule.total).contains(&n) && self.shard.owns(n, self.batch_size)
            };
            if !(0..self.schedule.samples_per_volume).any(wanted) {
                // Every patch of this visit comes before the resume point (or after the epoch): the case is
                // not even opened.
                continue;
            }
            let mut view = match self.source.open_case(case, self.loader.stream_uncompressed) {
                Ok(v) => v,
                Err(e) => {
                    let _ = out.send(Err(e));
                    return;
                }
            };
            let locations = ClassLocations::compute(view.labels(), self.loader.max_class_locations);
            for sample in 0..self.schedule.samples_per_volume {
                let sequence = self.schedule.sequence(visit, sample);
                if !wanted(sample) {
                    continue;
                }
                let key = [domain::PATCH, self.seed, self.epoch, visit as u64, case as u64, sample as u64];
                let mut rng = rng_for(&key);
                let origin = choose_origin(&self.placement(sequence), &locations, self.patch_size, &mut rng);
                let aug = draw(self.patch_size, &self.augment, &mut rng);
                let returned = match recycled.try_recv() {
                    Ok(p) => Some(p),
                    // Empty queue after a send: the consumer holds our last patch and hands it back (or,
                    // if the pool was full, one is already waiting). It ends only when the loader drops.
                    Err(_) if sent_any && out.is_empty() => match recycled.recv() {
                        Ok(p) => Some(p),
                        Err(_) => return,
                    },
                    Err(_) => None,
                };
                let mut patch = Patch::reuse_or_new(returned, view.channels(), voxels);
                let item = view.augmented_patch(origin, self.patch_size, &aug.transform, &mut patch.image).map(|()| {
                    let (labels, shape, g) = (&view.labels().data, view.shape(), &aug.transform.geometry);
                    crop_transformed(labels, shape, origin, self.patch_size, g, 0, |l| l, &mut patch.labels);
                    if let Some(std) = aug.noise_std {
                        add_gaussian_noise(&mut patch.image, std, &mut rng);
                    }
                    patch
                });
                let failed = item.is_err();
                if out.send(item).is_err() || failed {
                    return;
                }
                sent_any = true;
            }
            view.recycle();
        }
    }
}

/// Bytes held at most: see the module documentation.
pub fn memory_bound(
    largest_case_bytes: u64,
    workers: usize,
    queue_length: usize,
    patch_bytes: u64,
    max_class_locations: usize,
    num_classes: usize,
    batch_size: usize,
) -> u64 {
    let locations = (max_class_locations * num_classes * std::mem::size_of::<usize>()) as u64;
    let held_by_worker = (1 + RECYCLED_PER_WORKER) as u64 * patch_bytes + COMPRESSED_SPARE_MAX_BYTES as u64;
    workers as u64 * (largest_case_bytes + locations + held_by_worker)
        + queue_length as u64 * patch_bytes
        + batch_size as u64 * patch_bytes
}

/// Classes assumed for the class-location part of the bound when no label has been read yet (u8 labels).
const CLASS_BOUND_FOR_LOCATIONS: usize = 16;

pub struct PatchLoader {
    receivers: Vec<Receiver<Result<Patch>>>,
    /// Per worker: where the consumer hands patch buffers back for reuse.
    recyclers: Vec<Sender<Patch>>,
    handles: Vec<JoinHandle<()>>,
    schedule: Schedule,
    next: u64,
    /// The global batch; this loader's batches hold `batch_size / shard.ranks` of its patches.
    batch_size: usize,
    shard: Shard,
    patch_size: [usize; 3],
    waited: Duration,
    memory_bound: u64,
    stopped: bool,
}

impl PatchLoader {
    /// Starts the workers for one epoch of `batches` batches drawn from `cases` (indices into `source`).
    #[allow(clippy::too_many_arguments)] // the trainer's agreed API: every argument is a separate concern
    pub fn start(
        source: Arc<dyn CaseSource>,
        cases: Vec<usize>,
        loader: &LoaderConfig,
        augment: &AugmentConfig,
        patch_size: [usize; 3],
        batch_size: usize,
        batches: usize,
        seed: u64,
        epoch: u64,
    ) -> Result<Self> {
        Self::start_at(source, cases, loader, augment, patch_size, batch_size, batches, seed, epoch, 0)
    }

    /// [`PatchLoader::start`] resumed at batch `first_batch` of the epoch: the batches it yields are exactly
    /// those an uninterrupted epoch yields from that point (every patch is a pure function of its place in
    /// the schedule), and cases whose patches all come earlier are never opened.
    #[allow(clippy::too_many_arguments)] // as `start`, plus where to resume
    pub fn start_at(
        source: Arc<dyn CaseSource>,
        cases: Vec<usize>,
        loader: &LoaderConfig,
        augment: &AugmentConfig,
        patch_size: [usize; 3],
        batch_size: usize,
        batches: usize,
        seed: u64,
        epoch: u64,
        first_batch: usize,
    ) -> Result<Self> {
        Self::start_shard(
            source,
            cases,
            loader,
            augment,
            patch_size,
            batch_size,
            batches,
            seed,
            epoch,
            first_batch,
            Shard::WHOLE,
        )
    }

    /// [`PatchLoader::start_at`] for one rank of data-parallel training: `batch_size` is the global batch
    /// (a multiple of `shard.ranks`), and each batch this loader yields is the rank's `batch_size /
    /// shard.ranks` patches of it (see the module documentation).
    #[allow(clippy::too_many_arguments)] // as `start_at`, plus the shard
    pub fn start_shard(
        source: Arc<dyn CaseSource>,
        cases: Vec<usize>,
        loader: &LoaderConfig,
        augment: &AugmentConfig,
        patch_size: [usize; 3],
        batch_size: usize,
        batches: usize,
        seed: u64,
        epoch: u64,
        first_batch: usize,
        shard: Shard,
    ) -> Result<Self> {
        let bad =
            |field: &str, problem: &str| Err(VolumeError::Config { field: field.into(), problem: problem.into() });
        if loader.workers == 0 {
            return bad("loader.workers", "need at least one worker");
        }
        if loader.samples_per_volume == 0 {
            return bad("loader.samples_per_volume", "must be at least 1");
        }
        if batch_size == 0 || patch_size.contains(&0) {
            return bad("plan", "batch size and patch edges must be at least 1");
        }
        if shard.ranks == 0 || shard.rank >= shard.ranks || !batch_size.is_multiple_of(shard.ranks) {
            return bad(
                "plan",
                &format!("rank {} of {}: the global batch {batch_size} must split evenly", shard.rank, shard.ranks),
            );
        }
        if cases.is_empty() {
            return bad("data", "no cases to draw patches from");
        }
        if let Some(&bad_case) = cases.iter().find(|&&c| c >= source.len()) {
            return Err(VolumeError::Config {
                field: "data".into(),
                problem: format!("case index {bad_case} out of range ({} cases)", source.len()),
            });
        }
        let mut largest = 0u64;
        let mut channels = 1usize;
        for &c in &cases {
            let g = source.geometry(c)?;
            largest = largest.max(source.case_bytes(c, loader.stream_uncompressed)?);
            channels = channels.max(g.channels);
        }
        let patch_bytes = (voxel_count(patch_size) * (4 * channels + 2)) as u64;
        let classes = loader.class_weights.as_ref().map_or(CLASS_BOUND_FOR_LOCATIONS, Vec::len);
        let bound = memory_bound(
            largest,
            loader.workers,
            loader.queue_length,
            patch_bytes,
            loader.max_class_locations,
            classes,
            batch_size,
        );
        tracing::info!(
            workers = loader.workers,
            queue = loader.queue_length,
            largest_case_mib = largest as f64 / 1048576.0,
            patch_mib = patch_bytes as f64 / 1048576.0,
            bound_mib = bound as f64 / 1048576.0,
            "patch loader memory bound: workers × (largest case as held + class locations + 2 patches + gzip buffer) \
             + queue × patch + batch"
        );
        let total = (batches * batch_size) as u64;
        let schedule = Schedule::new(&cases, loader.workers, loader.samples_per_volume, total, seed, epoch);
        let workers = loader.workers.min(schedule.visits.len()).max(1);
        let schedule = Schedule { workers, ..schedule };
        let first = shard.next_owned((first_batch.min(batches) * batch_size) as u64, batch_size);
        let plan = Arc::new(WorkerPlan {
            source,
            schedule: schedule.clone(),
            first,
            loader: loader.clone(),
            augment: augment.clone(),
            patch_size,
            batch_size,
            shard,
            seed,
            epoch,
        });
        let capacity = loader.queue_length.div_ceil(workers).max(1);
        let mut receivers = Vec::with_capacity(workers);
        let mut recyclers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = bounded(capacity);
            let (give_back, take_back) = bounded(RECYCLED_PER_WORKER);
            let plan = Arc::clone(&plan);
            let handle = std::thread::Builder::new()
                .name(format!("voxplan-loader-{w}"))
                .spawn(move || plan.run(w, tx, take_back))
                .map_err(|e| VolumeError::LoaderStopped(format!("cannot start worker thread: {e}")))?;
            receivers.push(rx);
            recyclers.push(give_back);
            handles.push(handle);
        }
        Ok(Self {
            receivers,
            recyclers,
            handles,
            schedule,
            next: first,
            batch_size,
            shard,
            patch_size,
            waited: Duration::ZERO,
            memory_bound: bound,
            stopped: false,
        })
    }

    /// The next patch and the worker that made it.
    fn next_patch(&mut self) -> Result<(usize, Patch)> {
        let worker = self.schedule.worker_of(self.next);
        let t = Instant::now();
        let got = self.receivers[worker].recv();
        self.waited += t.elapsed();
        let taken = self.next;
        self.next = self.shard.next_owned(taken + 1, self.batch_size);
        match got {
            Ok(item) => item.map(|p| (worker, p)),
            Err(_) => Err(VolumeError::LoaderStopped(format!("worker {worker} exited before patch {taken}"))),
        }
    }

    /// The next batch; `None` after `batches` batches or after an error has been returned.
    pub fn next_batch(&mut self) -> Option<Result<PatchBatch>> {
        if self.stopped || self.next >= self.schedule.total {
            return None;
        }
        let result = self.assemble_batch();
        self.stopped = result.is_err();
        Some(result)
    }

    /// Copies `batch_size` patches into freshly allocated batch buffers (huge pages advised: the batch is
    /// handed to the trainer, which owns it from then on) and gives each patch's buffers back to its worker.
    fn assemble_batch(&mut self) -> Result<PatchBatch> {
        let n = voxel_count(self.patch_size);
        let per_rank = self.batch_size / self.shard.ranks;
        let mut batch: Option<PatchBatch> = None;
        for slot in 0..per_rank {
            let (worker, patch) = self.next_patch()?;
            let b = batch.get_or_insert_with(|| PatchBatch {
                images: zeroed_f32(per_rank * patch.channels * n),
                labels: zeroed_u16(per_rank * n),
                batch_size: per_rank,
                channels: patch.channels,
                patch_size: self.patch_size,
            });
            if patch.channels != b.channels {
                return Err(VolumeError::LoaderStopped(format!(
                    "cases disagree on channel count ({} vs {}) within one batch",
                    b.channels, patch.channels
                )));
            }
            let per_image = b.channels * n;
            b.images[slot * per_image..(slot + 1) * per_image].copy_from_slice(&patch.image);
            b.labels[slot * n..(slot + 1) * n].copy_from_slice(&patch.labels);
            // A full pool or a finished worker just means this patch is freed instead.
            let _ = self.recyclers[worker].try_send(patch);
        }
        batch.ok_or_else(|| VolumeError::LoaderStopped("batch size 0".into()))
    }

    /// Total time `next_batch` spent blocked waiting for workers (the data-starvation figure).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The bound on bytes held by workers and queues (logged at start).
    pub fn memory_bound_bytes(&self) -> u64 {
        self.memory_bound
    }
}

impl Drop for PatchLoader {
    /// Hangs up the queues so blocked workers return, then joins them.
    fn drop(&mut self) {
        self.receivers.clear();
        self.recyclers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_assigns_every_sequence_to_the_worker_that_produces_it() {
        for workers in 1..4 {
            let s = Schedule::new(&[0, 1, 2, 3, 4], workers, 3, 29, 1, 0);
            let mut produced: Vec<(u64, usize)> = Vec::new();
            for v in 0..s.visits.len() {
                for k in 0..3 {
                    produced.push((s.sequence(v, k), v % workers));
                }
            }
            produced.retain(|&(n, _)| n < 29);
            produced.sort_unstable();
            let seqs: Vec<u64> = produced.iter().map(|p| p.0).collect();
            assert_eq!(seqs, (0..29).collect::<Vec<_>>(), "workers {workers}: a permutation of 0..29");
            assert!(produced.iter().all(|&(n, w)| s.worker_of(n) == w));
        }
    }

    #[test]
    fn each_epoch_pass_visits_every_case_before_repeating() {
        let s = Schedule::new(&[3, 5, 7, 9], 2, 2, 16, 9, 4);
        assert_eq!(s.visits.len(), 8);
        let mut first: Vec<usize> = s.visits[..4].to_vec();
        first.sort_unstable();
        assert_eq!(first, vec![3, 5, 7, 9]);
    }
}
