"""The shared core of kcont: state machine, queues, timers, mutex, dispatch.

Modules (one concept each):

* ``flags``        state flag names and meanings
* ``continuation`` the continuation and every transition of its flags
* ``runqueue``     run queues and the ordering rules (sub-queues, parking)
* ``workqueue``    priorities, workqueues, predefined queues, the registry
* ``timerwheel``   the hashed timing wheel (integer ticks)
* ``mutex``        kcont.Mutex, which wakes parked sub-queues on release
* ``dispatch``     the one function that calls continuation functions
* ``runtime``      what every runtime shares; current CPU and runtime
"""
