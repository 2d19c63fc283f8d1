// AtomicFile: replace a file all at once or not at all.
//
// Writing a checkpoint straight onto `model.safetensors` has a bad failure
// mode: if the process is killed, the disk fills up or the machine loses
// power halfway through, the old checkpoint is already gone and the new one is
// half there. The next run then fails to load it, or worse, loads garbage.
//
// The classic fix, used by editors, databases and package managers:
//
//   1. write the new contents to a temporary file *in the same directory*,
//   2. flush it to disk (`fsync`),
//   3. `rename` it over the target.
//
// POSIX promises that `rename` within one file system is atomic: anyone who
// opens the path sees either the whole old file or the whole new one, never a
// mixture. That is why the temporary file must live in the same directory: a
// rename across file systems (say /tmp to /home) is not a rename at all but a
// copy, and the promise is gone.
//
// Step 2 matters because the kernel may reorder writes: without `fsync`, the
// rename can reach the disk before the data does, and a power cut leaves a
// complete-looking file full of zeros. Flushing the directory afterwards makes
// the rename itself durable. Neither costs much for the few files we write.

#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write  // `write` alone would mean AtomicFile.write below
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif
import Foundation

/// A failure while writing a file atomically, as one line: `"PATH: problem"`.
public struct AtomicFileError: Error, CustomStringConvertible, LocalizedError {
    /// The file we were trying to write (or the directory we needed).
    public var path: String
    /// What went wrong, e.g. "cannot create temporary file (Permission denied)".
    public var problem: String

    public var description: String { "\(path): \(problem)" }
    public var errorDescription: String? { description }
}

/// Writes files so that a crash never leaves a half-written file behind.
public enum AtomicFile {
    /// Replaces the contents of `url` with `data`, atomically.
    ///
    /// Creates the parent directory if needed. After this returns, the file
    /// holds exactly `data`; if it throws, the file is unchanged (or still
    /// absent) and no temporary file is left behind.
    ///
    ///     try AtomicFile.write(Data("hello\n".utf8), to: URL(fileURLWithPath: "runs/notes.txt"))
    ///
    /// - Throws: `AtomicFileError` naming the path and the problem.
    /// - Complexity: O(`data.count`) bytes written, plus two `fsync` calls.
    public static func write(_ data: Data, to url: URL) throws {
        let target = url.standardizedFileURL
        let path = target.path
        let directory = target.deletingLastPathComponent().path

        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw AtomicFileError(path: directory, problem: "cannot create directory (\(oneLine(error)))")
        }

        // A hidden name that cannot collide with another writer: the process
        // id separates processes, the random suffix separates threads.
        let temporaryPrefix = "." + target.lastPathComponent + ".tmp-"
        let temporaryPath = directory + "/" + temporaryPrefix
            + "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        removeStaleTemporaryFiles(in: directory, prefix: temporaryPrefix)

        // O_EXCL: fail rather than follow a file (or symlink) that is already there.
        let fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        if fd < 0 {
            throw AtomicFileError(path: path, problem: "cannot create temporary file (\(lastErrorText()))")
        }

        // From here on, any failure must remove the temporary file.
        do {
            try writeAll(data, to: fd, path: path)
            if fsync(fd) != 0 {
                throw AtomicFileError(path: path, problem: "cannot flush to disk (\(lastErrorText()))")
            }
            if close(fd) != 0 {
                throw AtomicFileError(path: path, problem: "cannot close temporary file (\(lastErrorText()))")
            }
        } catch {
            close(fd)  // harmless if already closed: we are about to give up anyway
            unlink(temporaryPath)
            throw error
        }

        if rename(temporaryPath, path) != 0 {
            let problem = "cannot rename temporary file into place (\(lastErrorText()))"
            unlink(temporaryPath)
            throw AtomicFileError(path: path, problem: problem)
        }

        // Make the rename durable too. Best effort: some file systems refuse
        // to fsync a directory, and the data itself is already safe.
        let directoryFD = open(directory, O_RDONLY)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            close(directoryFD)
        }
    }

    /// A writer killed between creating its temporary file and renaming it
    /// (kill -9, power loss) leaves `.NAME.tmp-PID-RANDOM` behind. The next
    /// write of the same NAME removes those whose process no longer exists
    /// (`kill(pid, 0)` fails with ESRCH); a live writer's file is left alone, and
    /// so is anything not named exactly like ours. Best effort: errors are ignored.
    static func removeStaleTemporaryFiles(in directory: String, prefix: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names where name.hasPrefix(prefix) {
            let parts = name.dropFirst(prefix.count).split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, let pid = Int32(parts[0]), pid > 0, UInt32(parts[1]) != nil else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                unlink(directory + "/" + name)
            }
        }
    }

    /// `write(2)` may write fewer bytes than asked (signals, pipes, quotas),
    /// so loop until everything is out.
    private static func writeAll(_ data: Data, to fd: Int32, path: String) throws {
        try data.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) in
            guard var pointer = buffer.baseAddress else { return }  // empty data: nothing to do
            var remaining = buffer.count
            while remaining > 0 {
                let written = systemWrite(fd, pointer, remaining)
                if written < 0 {
                    if errno == EINTR { continue }  // interrupted before writing: just retry
                    throw AtomicFileError(path: path, problem: "cannot write (\(lastErrorText()))")
                }
                pointer += written
                remaining -= written
            }
        }
    }

    /// The C library's message for the current `errno`, e.g. "No space left on device".
    private static func lastErrorText() -> String {
        String(cString: strerror(errno))
    }

    /// Foundation errors can span lines; our errors are one line each.
    private static func oneLine(_ error: Error) -> String {
        error.localizedDescription.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}
