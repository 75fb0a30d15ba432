"""Train the tiny preset for a few steps with MultiWorkerMirroredStrategy: two worker processes
on localhost, configured by TF_CONFIG, sharing one run folder (the chief, worker 0, writes it).

    python3 tests/scripts/two_workers.py IMAGE_FOLDER RUN_FOLDER [STEPS]
"""
import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(('127.0.0.1', 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def main(images, run_dir, steps=4):
    workers = [f'127.0.0.1:{port}' for port in free_ports(2)]
    processes = []
    for task_id in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': task_id}}),
            TF_CPP_MIN_LOG_LEVEL='3')
        command = [sys.executable, os.path.join(ROOT, 'train.py'), '--strategy', 'multiworker',
                   '--preset', 'tiny', '--file_pattern', images, '--model_dir', run_dir,
                   '--total_iter', str(steps), '--fid_inter', '0', '--metrics_inter', '1',
                   '--set', 'jit=False']
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    for task_id, (process, output) in enumerate(zip(processes, outputs)):
        print(f'--- worker {task_id}: exit {process.returncode}\n{output[-2000:]}')
    return max(process.returncode for process in processes)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])))
