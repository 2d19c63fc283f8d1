// Parallel: how this project uses more than one core.
//
// There is exactly one mechanism: `DispatchQueue.concurrentPerform`, which runs
// a closure for iterations 0..<n on the system's worker threads and returns
// when all are done. We never hand it more iterations than threads we want
// busy, and each iteration owns a disjoint slice of the output, so there are
// no locks and no data races: a thread only writes memory nobody else writes.
//
// The thread count is a single process-wide setting (`--threads` on the
// command line). With 1 thread everything runs inline on the caller's thread,
// which is also what the tests use to make results independent of the machine.
// What the threads buy, measured: Notebooks/part2-implementation.md, §19.
import Dispatch
import Foundation

public enum Parallel {
    /// How many threads compute kernels may use. Defaults to the number of
    /// active cores; `mnist-moe --threads N` sets it.
    public static var threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Runs `body(i)` for every i in 0..<count, spread over at most `threads`
    /// threads. Returns when all iterations are done. Iterations must write
    /// disjoint memory.
    ///
    /// Runs inline when `count` or `threads` is 1, so the cost of going
    /// through Dispatch (a few microseconds) is only paid when it can help.
    public static func forEach(_ count: Int, threads: Int = Parallel.threads, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threads <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        // concurrentPerform would use every core; to honour `threads`, start
        // `threads` workers and deal the indices out like cards: worker w runs
        // w, w + workers, w + 2·workers, … Dealt, not claimed: workers taking
        // the next unclaimed index under a lock kept threads equally busy in
        // theory, but on a 2-vCPU KVM guest (2026-12-02) a worker that found
        // the lock taken slept in the kernel and woke ~0.1 ms later, for each
        // of the 128 (sequence, head) pairs of an attention layer: a GPT step
        // took 192 ms on two threads against 127 on one; dealt, 94–98 ms.
        // Which thread runs an iteration never changes what it computes, so
        // results do not depend on the schedule.
        let workers = min(count, threads)
        if workers == count {
            DispatchQueue.concurrentPerform(iterations: count, execute: body)
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            var i = w
            while i < count { body(i); i += workers }
        }
    }

    /// Runs `body(i)` for every i in `costs.indices`, like `forEach`, but hands
    /// each thread a share of similar total cost: the costliest first, each to
    /// the thread with least work so far. The MoE layer's experts have as many
    /// rows as the router sent them, 5 or 30 in one batch; dealt in turn, one
    /// thread could get most of the rows and the other wait for it. As with
    /// `forEach`, iterations must write disjoint memory, and which thread runs
    /// an iteration changes nothing it computes.
    public static func forEach(costs: [Int], threads: Int = Parallel.threads, _ body: (Int) -> Void) {
        let workers = min(costs.count, threads)
        if workers <= 1 { for i in costs.indices { body(i) }; return }
        var shares = [[Int]](repeating: [], count: workers)
        var load = [Int](repeating: 0, count: workers)
        for i in costs.indices.sorted(by: { costs[$0] > costs[$1] || (costs[$0] == costs[$1] && $0 < $1) }) {
            let w = load.indices.min { load[$0] < load[$1] }!
            shares[w].append(i)
            load[w] += costs[i]
        }
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for i in shares[w] { body(i) }
        }
    }
}
