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
    @inlinable
    public static func forEach(_ count: Int, threads: Int = Parallel.threads, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threads <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        // concurrentPerform would use every core; to honour `threads`, hand it
        // `threads` iterations and let each take every threads-th index.
        let groups = min(count, threads)
        if groups == count {
            DispatchQueue.concurrentPerform(iterations: count, execute: body)
        } else {
            DispatchQueue.concurrentPerform(iterations: groups) { g in
                for i in stride(from: g, to: count, by: groups) { body(i) }
            }
        }
    }
}
