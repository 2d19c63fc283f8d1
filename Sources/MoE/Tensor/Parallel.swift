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
        // `threads` workers that take the next unclaimed index until none is
        // left. Taking indices one at a time (not a fixed share each) keeps the
        // threads equally busy when iterations differ in cost, as experts with
        // different numbers of tokens do. Which thread runs an iteration never
        // changes what it computes, so results do not depend on the schedule.
        let workers = min(count, threads)
        if workers == count {
            DispatchQueue.concurrentPerform(iterations: count, execute: body)
            return
        }
        let lock = NSLock()
        var next = 0
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while true {
                lock.lock()
                let i = next
                next += 1
                lock.unlock()
                if i >= count { return }
                body(i)
            }
        }
    }
}
