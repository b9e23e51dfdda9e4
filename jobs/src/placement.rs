//! Which queued job starts on which card, with which budget, and why the others wait.
//!
//! A job brings, per kind of card, two raw budgets from its plan ([`BudgetRange`]): the least that keeps
//! its patch and what its preferred plan needs. A card offers its **room**: what is free now (other users'
//! processes included) less what this round has already handed out, and never more than its total less
//! the budgets of the queue's jobs already on it (a job that has just started has not allocated yet). A job
//! starts on the card where it leaves the least room unused (best fit, so small jobs pack together and big
//! cards stay whole for big jobs) with `min(room, its full budget)`: the planner in the job then keeps its
//! effective batch in that budget. Budgets include the planner's safety margin, so cards are never
//! oversubscribed even when a plan is off by its margin.
//!
//! Jobs are served by priority, then age. The first job that cannot start **reserves** memory on the card
//! that could hold it once the queue's own jobs there end (EASY backfilling, in memory instead of time):
//! later jobs may start anywhere, that card included, but only as long as what they take plus the
//! reservation fits what the card will have when the queue's running jobs there end. Small jobs fill the
//! gaps, and the big job still fits the moment its card's jobs finish, however long the small ones run. A job
//! that fits no card even when the queue's jobs there end (others hold memory) waits with that reason;
//! submit refuses jobs that fit no card of the box at all.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::job::{BudgetRange, JobId};

/// A card as placement sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CardState {
    pub index: usize,
    pub kind: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Budgets of the queue's jobs running on it.
    pub committed_bytes: u64,
}

impl CardState {
    /// What the card could give the queue if the queue's own jobs on it ended: its total less what others
    /// use (what is neither free nor the queue's).
    fn capacity(&self) -> u64 {
        let others = self.total_bytes.saturating_sub(self.free_bytes).saturating_sub(self.committed_bytes);
        self.total_bytes.saturating_sub(others)
    }
}

/// A queued job as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: JobId,
    /// Cards it needs at once.
    pub gpus: usize,
    /// Per card kind.
    pub budgets: BTreeMap<String, BudgetRange>,
    /// After an out-of-memory, the most it may be given.
    pub budget_cap: Option<u64>,
}

/// What to do with one queued job now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Start { id: JobId, cards: Vec<usize>, budget_bytes: u64 },
    Wait { id: JobId, reason: String },
}

impl Decision {
    pub fn id(&self) -> JobId {
        match self {
            Decision::Start { id, .. } | Decision::Wait { id, .. } => *id,
        }
    }
}

/// Decides every job of `jobs` (in the order they are served) against `cards`.
pub fn place(cards: &[CardState], jobs: &[Candidate]) -> Vec<Decision> {
    let mut round =
        Round { cards, started: vec![0; cards.len()], reserved: vec![0; cards.len()], reservation_made: false };
    jobs.iter().map(|job| round.decide(job)).collect()
}

/// One placement round: what it has handed out and reserved so far.
struct Round<'a> {
    cards: &'a [CardState],
    started: Vec<u64>,
    reserved: Vec<u64>,
    reservation_made: bool,
}

impl Round<'_> {
    /// What card `i` can give a job now: what is free (less this round's starts), never more than its total
    /// less the queue's budgets there, and, with a reservation, never so much that the reservation would
    /// not fit once the queue's running jobs there end.
    fn room(&self, i: usize, honour_reservation: bool) -> u64 {
        let c = &self.cards[i];
        let free = c.free_bytes.saturating_sub(self.started[i]);
        let unpromised = c.total_bytes.saturating_sub(c.committed_bytes).saturating_sub(self.started[i]);
        let reserved = if honour_reservation { self.reserved[i] } else { 0 };
        let after_queue_jobs = c.capacity().saturating_sub(reserved).saturating_sub(self.started[i]);
        free.min(unpromised).min(if reserved > 0 { after_queue_jobs } else { u64::MAX })
    }

    /// The job's budgets on card `i`, its cap applied; `None` when it was not planned for that kind or the
    /// cap leaves less than it needs.
    fn range(&self, job: &Candidate, i: usize) -> Option<BudgetRange> {
        let r = *job.budgets.get(&self.cards[i].kind)?;
        let full = job.budget_cap.map_or(r.full_bytes, |cap| cap.min(r.full_bytes));
        (full >= r.min_bytes).then_some(BudgetRange { min_bytes: r.min_bytes, full_bytes: full })
    }

    /// Cards that can take the job now: `(card, budget it would get, room, what the budget falls short of
    /// its preferred plan)`.
    fn fitting(&self, job: &Candidate, honour_reservation: bool) -> Vec<(usize, u64, u64, u64)> {
        (0..self.cards.len())
            .filter_map(|i| {
                let r = self.range(job, i)?;
                let room = self.room(i, honour_reservation);
                let budget = r.full_bytes.min(room);
                (room >= r.min_bytes).then_some((i, budget, room, r.full_bytes - budget))
            })
            .collect()
    }

    fn decide(&mut self, job: &Candidate) -> Decision {
        let gpus = job.gpus.max(1);
        let mut fitting = self.fitting(job, true);
        if fitting.len() >= gpus {
            // The card that gives the job its preferred plan, then best fit (least room left unused, so small
            // jobs pack and big cards stay whole), then the lowest index.
            fitting.sort_by_key(|&(i, budget, room, short)| (short, room - budget, i));
            fitting.truncate(gpus);
            let budget = fitting.iter().map(|c| c.1).min().unwrap_or(0);
            for &(i, _, _, _) in &fitting {
                self.started[i] += budget;
            }
            let mut cards: Vec<usize> = fitting.iter().map(|c| self.cards[c.0].index).collect();
            cards.sort_unstable();
            return Decision::Start { id: job.id, cards, budget_bytes: budget };
        }
        Decision::Wait { id: job.id, reason: self.why_wait(job) }
    }

    /// The reason a job waits; the first waiting job also reserves its memory on the cards that could take
    /// it once the queue's jobs there end.
    fn why_wait(&mut self, job: &Candidate) -> String {
        let gpus = job.gpus.max(1);
        let cards = self.cards;
        let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
        let planned: Vec<usize> = (0..cards.len()).filter(|&i| job.budgets.contains_key(&cards[i].kind)).collect();
        if planned.is_empty() {
            let kinds: Vec<&str> = cards.iter().map(|c| c.kind.as_str()).collect();
            return format!("not planned for any card here ({}); it fits none of them", kinds.join(", "));
        }
        if job.budget_cap.is_some() && planned.iter().all(|&i| self.range(job, i).is_none()) {
            return "its budget after an out-of-memory is below the least that keeps its patch".into();
        }
        let need = planned.iter().filter_map(|&i| self.range(job, i)).map(|r| r.min_bytes).min().unwrap_or(0);
        let best_now = (0..cards.len()).map(|i| self.room(i, true)).max().unwrap_or(0);
        if self.fitting(job, false).len() >= gpus {
            return format!(
                "needs {} at least; that room exists only in memory reserved for a job ahead of it",
                gib(need)
            );
        }
        // Cards that could hold it once the queue's jobs there end, biggest first.
        let mut able: Vec<(usize, u64, BudgetRange)> = planned
            .iter()
            .filter_map(|&i| self.range(job, i).map(|r| (i, cards[i].capacity().saturating_sub(self.reserved[i]), r)))
            .filter(|(_, capacity, r)| *capacity >= r.min_bytes)
            .collect();
        able.sort_by_key(|&(i, capacity, _)| (std::cmp::Reverse(capacity), i));
        if able.len() < gpus {
            return format!(
                "needs {} on {gpus} card(s); no card has that much even when the queue's jobs there end (other users \
                 hold memory)",
                gib(need)
            );
        }
        if self.reservation_made {
            return format!("needs {} at least, {} is the most room now", gib(need), gib(best_now));
        }
        self.reservation_made = true;
        let chosen: Vec<(usize, u64, BudgetRange)> = able.into_iter().take(gpus).collect();
        let amount = chosen.iter().map(|(_, capacity, r)| r.full_bytes.min(*capacity)).min().unwrap_or(0);
        for (i, _, _) in &chosen {
            self.reserved[*i] += amount;
        }
        let names: Vec<String> = chosen.iter().map(|(i, _, _)| format!("cuda:{}", cards[*i].index)).collect();
        format!(
            "waits for {}: needs {} at least, {} is the most room now; {} reserved there for it",
            names.join(", "),
            gib(need),
            gib(best_now),
            gib(amount)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn card(index: usize, kind: &str, total_gib: u64, free_gib: u64, committed_gib: u64) -> CardState {
        CardState {
            index,
            kind: kind.into(),
            total_bytes: total_gib * GIB,
            free_bytes: free_gib * GIB,
            committed_bytes: committed_gib * GIB,
        }
    }

    /// A job that needs `min`–`full` GiB on every card kind named.
    fn job(id: JobId, min: u64, full: u64, kinds: &[&str]) -> Candidate {
        let budgets = kinds
            .iter()
            .map(|k| (k.to_string(), BudgetRange { min_bytes: min * GIB, full_bytes: full * GIB }))
            .collect();
        Candidate { id, gpus: 1, budgets, budget_cap: None }
    }

    fn start(d: &Decision) -> (Vec<usize>, u64) {
        match d {
            Decision::Start { cards, budget_bytes, .. } => (cards.clone(), budget_bytes / GIB),
            Decision::Wait { reason, .. } => panic!("waits: {reason}"),
        }
    }

    fn waits(d: &Decision) -> &str {
        match d {
            Decision::Wait { reason, .. } => reason,
            Decision::Start { .. } => panic!("starts: {d:?}"),
        }
    }

    #[test]
    fn small_jobs_share_a_card_and_each_gets_its_full_budget() {
        let cards = [card(0, "A100", 40, 40, 0)];
        let d = place(&cards, &[job(1, 4, 10, &["A100"]), job(2, 4, 10, &["A100"]), job(3, 4, 10, &["A100"])]);
        for decision in &d {
            assert_eq!(start(decision), (vec![0], 10));
        }
        // A fourth fits in what is left (10 GiB), a fifth only at its minimum... then nothing.
        let d = place(&cards, &(1..=6).map(|i| job(i, 4, 10, &["A100"])).collect::<Vec<_>>());
        let budgets: Vec<Option<u64>> = d
            .iter()
            .map(|x| match x {
                Decision::Start { budget_bytes, .. } => Some(budget_bytes / GIB),
                Decision::Wait { .. } => None,
            })
            .collect();
        assert_eq!(budgets, vec![Some(10), Some(10), Some(10), Some(10), None, None], "never oversubscribed");
    }

    #[test]
    fn best_fit_keeps_the_big_card_whole_for_the_big_job() {
        let cards = [card(0, "A100", 40, 40, 0), card(1, "T4", 16, 16, 0)];
        let small = job(1, 2, 6, &["A100", "T4"]);
        let big = job(2, 30, 36, &["A100"]);
        let d = place(&cards, &[small, big]);
        assert_eq!(start(&d[0]), (vec![1], 6), "both give it its plan: it goes where it leaves the least room unused");
        assert_eq!(start(&d[1]), (vec![0], 36));
    }

    #[test]
    fn a_card_that_is_partly_used_gives_a_smaller_budget_not_a_smaller_patch() {
        // 12 GiB free: a job that prefers 20 GiB and needs 8 to keep its patch starts with 12 GiB.
        let cards = [card(0, "V100", 32, 12, 0)];
        assert_eq!(start(&place(&cards, &[job(1, 8, 20, &["V100"])])[0]), (vec![0], 12));
        // Only 6 GiB: it waits rather than shrink its patch.
        let cards = [card(0, "V100", 32, 6, 0)];
        assert!(waits(&place(&cards, &[job(1, 8, 20, &["V100"])])[0]).contains("needs 8.0 GiB"));
    }

    #[test]
    fn jobs_already_running_count_with_their_budget_even_before_they_allocate() {
        // The card reports 40 GiB free, but the queue gave 30 to a job that has just started.
        let cards = [card(0, "A100", 40, 40, 30)];
        let d = place(&cards, &[job(1, 8, 20, &["A100"])]);
        assert_eq!(start(&d[0]), (vec![0], 10));
    }

    #[test]
    fn priority_order_with_backfill_that_never_eats_the_reservation() {
        // cuda:0 (40 GiB) runs a queue job with 30: 10 free. The big job, served first, needs 25: it waits and
        // reserves 25 there. A small job may start in the free 10 GiB, since 25 still fit once the 30-GiB job
        // ends (40 − 8 ≥ 25); a second small one finds no room left.
        let cards = [card(0, "A100", 40, 10, 30)];
        let jobs = [job(1, 25, 25, &["A100"]), job(2, 4, 8, &["A100"]), job(3, 4, 8, &["A100"])];
        let d = place(&cards, &jobs);
        assert!(waits(&d[0]).contains("waits for cuda:0") && waits(&d[0]).contains("25.0 GiB reserved"), "{d:?}");
        assert_eq!(start(&d[1]), (vec![0], 8), "backfilled beside the reservation");
        assert!(waits(&d[2]).contains("most room now"), "{d:?}");
        // A bigger reservation (36 of 40) leaves a small job only 4 GiB beside it: it starts at its minimum,
        // and the next one waits behind the reservation although 6 GiB are free.
        let jobs = [job(1, 36, 36, &["A100"]), job(2, 4, 8, &["A100"]), job(3, 4, 8, &["A100"])];
        let d = place(&cards, &jobs);
        assert_eq!(start(&d[1]), (vec![0], 4));
        assert!(waits(&d[2]).contains("reserved for a job ahead of it"), "{d:?}");
        // Elsewhere the small jobs are unconstrained: a T4 beside the busy A100 takes them whole.
        let cards = [card(0, "A100", 40, 10, 30), card(1, "T4", 16, 16, 0)];
        let jobs = [job(1, 36, 36, &["A100"]), job(2, 4, 8, &["A100", "T4"]), job(3, 4, 8, &["A100", "T4"])];
        let d = place(&cards, &jobs);
        assert_eq!(start(&d[1]), (vec![1], 8), "the card that gives its preferred plan");
        assert_eq!(start(&d[2]), (vec![1], 8));
    }

    #[test]
    fn a_job_too_big_for_every_card_says_so() {
        let cards = [card(0, "T4", 16, 16, 0), card(1, "T4", 16, 16, 0)];
        let d = place(&cards, &[job(1, 20, 24, &["T4"]), job(2, 4, 8, &["V100"])]);
        assert!(waits(&d[0]).contains("no card has that much"), "{d:?}");
        assert!(waits(&d[1]).contains("not planned for any card here"), "{d:?}");
        // Another user's process holding 10 GiB makes an 8 GiB job wait, although the card's total would do.
        let cards = [card(0, "T4", 16, 6, 0)];
        assert!(waits(&place(&cards, &[job(1, 8, 10, &["T4"])])[0]).contains("other users hold memory"));
    }

    #[test]
    fn an_out_of_memory_cap_lowers_the_budget_and_a_cap_below_the_minimum_is_named() {
        let cards = [card(0, "A100", 40, 40, 0)];
        let mut j = job(1, 4, 20, &["A100"]);
        j.budget_cap = Some(14 * GIB);
        assert_eq!(start(&place(&cards, std::slice::from_ref(&j))[0]), (vec![0], 14));
        j.budget_cap = Some(3 * GIB);
        assert!(waits(&place(&cards, &[j])[0]).contains("below the least"));
    }

    #[test]
    fn a_multi_card_job_takes_as_many_cards_with_one_budget() {
        let cards = [card(0, "A100", 40, 40, 0), card(1, "A100", 40, 20, 0), card(2, "A100", 40, 40, 0)];
        let mut j = job(1, 8, 30, &["A100"]);
        j.gpus = 2;
        assert_eq!(start(&place(&cards, &[j.clone()])[0]), (vec![0, 2], 30));
        j.gpus = 3;
        assert_eq!(start(&place(&cards, &[j.clone()])[0]), (vec![0, 1, 2], 20), "the smallest room sets the budget");
        j.gpus = 4;
        assert!(waits(&place(&cards, &[j])[0]).contains("on 4 card(s)"));
    }
}
