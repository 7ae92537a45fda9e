"""Pickling of program state: protocol 5, out-of-band buffers, identity kept.

One pickle stream holds all roots of a commit, so two names for one object
restore as one object. On top of plain pickle:

* modules are saved by reference (their import name);
* a NumPy array that is a view of another array is saved as (base, offset,
  shape, strides, dtype), so views of one array restore as views of one array;
* contiguous array data leaves the stream as out-of-band buffers, which the
  caller copies (the program keeps running and may change them);
* a function or class of the user's code that no top-level ``def``/``class``
  of its module defines (a closure, a lambda, one defined in a loop body, a
  branch or ``main()``) is saved by value (marshal'd code, defaults, cells; a
  class's namespace), since resume can only find top-level ones by name;
* a torch optimizer is saved with all its attributes (torch's own pickling
  keeps only defaults, state and param_groups);
* a torch DataLoader iterator is saved as how to re-create it (see dataloader.py);
* a generator of the user's code is saved as its frame (resume/generators.py);
* a CPU torch tensor is saved as (storage, offset, size, stride, dtype), its
  storage's bytes out of band and once per storage, so views and tensors that
  share a storage come back sharing it.
"""

from __future__ import annotations

import copyreg
import importlib
import io
import os
import pickle
import sys
import types
import weakref

from ..astpath import class_factory_name
from . import dataloader, progressbars, resources

PROTOCOL = 5


def _import_module(name: str) -> types.ModuleType:
    return importlib.import_module(name)


def _rebuild_view(base, offset: int, shape, strides, dtype, writeable: bool):
    import numpy as np

    view = np.ndarray(shape, dtype=dtype, buffer=base, offset=offset, strides=strides)
    if not writeable:
        view.flags.writeable = False
    return view


def _reopen(name: str, mode: str, encoding, newline, position, binary: bool, size: int | None = None):
    """A file as it was at the commit: reopened, and cut back to the size it had
    on disk then if the program writes it (so writes after the commit vanish).
    Never extended: every object on one path recorded the same size."""
    writing = any(c in mode for c in "wax+")
    if writing:
        with open(name, "ab") as f:  # exists again if it was removed
            if size is not None and f.seek(0, os.SEEK_END) > size:
                f.truncate(size)
        reopen_mode = mode.replace("w", "a").replace("x", "a")
    else:
        reopen_mode = mode
    kwargs = {} if binary else {"encoding": encoding, "newline": newline}
    f = open(name, reopen_mode, **kwargs)
    if not writing or "+" in mode:
        f.seek(position)
    return f


def _find_wrapped(module: str, qualname: str):
    """A function its module's name for it wraps (a decorator without functools.wraps)."""
    found = sys.modules[module] if module in sys.modules else importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    function = unwrapped(found, qualname)
    if function is None:
        raise pickle.UnpicklingError(f"{module}.{qualname} no longer wraps the function {qualname}()")
    return function


def _init_takes_other_arguments(cls: type) -> bool:
    """Does this exception class define an ``__init__`` of its own (whose arguments
    need not be its ``args``), and pickle it the default way?"""
    return (cls.__reduce_ex__ is BaseException.__reduce_ex__ and cls.__reduce__ is BaseException.__reduce__
            and any("__init__" in vars(k) for k in cls.__mro__ if k.__flags__ & _HEAP_TYPE))


_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: classes made by a class statement (built-in exceptions are not)


def _rebuild_exception(cls, args):
    """An exception as it was, without calling its ``__init__`` again."""
    error = cls.__new__(cls, *args)
    error.args = args
    return error


def _closed_file(binary: bool):
    """Stands in for a file the program had already closed (it can only be closed)."""
    f = open(os.devnull, "rb" if binary else "r")
    f.close()
    return f


def _file_state(f):
    """(name, mode, encoding, newline, position, binary, size on disk) of a
    real, open file object (flushed first), or None for anything else (sockets,
    pipes, closed or unnamed files)."""
    name = getattr(f, "name", None)
    mode = getattr(f, "mode", None)
    if not isinstance(name, str) or not isinstance(mode, str) or f.closed:
        return None
    try:
        if f.writable():
            f.flush()
        position = f.tell()
    except (OSError, ValueError):
        return None
    binary = isinstance(f, (io.BufferedIOBase, io.RawIOBase))
    encoding = getattr(f, "encoding", None)
    newline = None
    try:
        size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        size = None
    return name, mode, encoding, newline, position, binary, size


def unwrapped(obj, qualname: str, depth: int = 0):
    """The function with code ``qualname`` that ``obj`` is or wraps: through
    staticmethod/classmethod, ``__wrapped__`` (functools.wraps), a wrapper closure's
    cells (a decorator written without wraps) and a decorator object's attributes
    (a class-based decorator)."""
    obj = getattr(obj, "__func__", obj)
    if getattr(getattr(obj, "__code__", None), "co_qualname", None) == qualname:
        return obj
    if depth >= 4 or obj is None:
        return None
    inner = [getattr(obj, "__wrapped__", None)]
    inner += [cell.cell_contents for cell in getattr(obj, "__closure__", None) or () if _filled(cell)]
    if not isinstance(obj, (types.FunctionType, type)):
        inner += list(getattr(obj, "__dict__", {}).values())
    for candidate in inner:
        if callable(candidate):
            found = unwrapped(candidate, qualname, depth + 1)
            if found is not None:
                return found
    return None


def _filled(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def file_savable(f) -> bool:
    """Is ``f`` a file dart saves as itself (closed, or a real open file with a position)?"""
    return f.closed or _file_state(f) is not None


def _maps_a_file(array) -> bool:
    import mmap

    return isinstance(array.base, mmap.mmap) and isinstance(getattr(array, "filename", None), str)


def _reduce_memmap(array):
    """An ``np.memmap`` is saved as the file it maps (flushed now), not as a copy
    of its bytes: loaded as a copy, writes after a resume would never reach the
    file. Paths inside the working folder are kept relative to it (a copied
    project folder maps its own file)."""
    array.flush()
    name = array.filename
    here = os.getcwd()
    if name.startswith(here + os.sep):
        name = os.path.relpath(name, here)
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    mode = "r+" if array.mode == "w+" else array.mode  # "w+" would empty the file
    return _open_memmap, (name, array.dtype, mode, array.offset, array.shape, order)


def _open_memmap(name, dtype, mode, offset, shape, order):
    import numpy as np

    return np.memmap(name, dtype=dtype, mode=mode, offset=offset, shape=shape, order=order)


def _root_array(array):
    """The outermost ndarray in ``array``'s chain of bases (the one whose memory
    the view looks at)."""
    import numpy as np

    root = None
    base = array.base
    while isinstance(base, np.ndarray):
        root = base
        base = base.base
    return root


def _rebuild_storage(data, device: str = "cpu"):
    import torch

    if len(data) == 0:
        storage = torch.empty(0, dtype=torch.uint8).untyped_storage()
    else:
        storage = torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
    if device != "cpu":
        try:
            storage = storage.to(device=device)
        except (RuntimeError, AssertionError) as exc:
            import warnings

            from ..errors import DartWarning

            warnings.warn(
                f"a tensor saved on {device} is loaded on the CPU: {str(exc).splitlines()[0]}; "
                "move it with .to(device) once the device is available",
                DartWarning,
                stacklevel=2,
            )
    return storage


def _rebuild_tensor(storage, offset, size, stride, dtype, requires_grad, parameter, grad):
    import torch

    tensor = torch.empty(0, dtype=dtype, device=storage.device).set_(storage, offset, size, stride)
    if parameter:
        tensor = torch.nn.Parameter(tensor, requires_grad=requires_grad)
    elif requires_grad:
        tensor.requires_grad_(True)
    if grad is not None:
        tensor.grad = grad
    return tensor


GRAPH_IN_USE = (
    "a tensor of an autograd graph backward() has not used yet (a loss summed over steps, log-probabilities "
    "kept for an episode): it would come back without its graph, and backward() would not reach the weights; "
    "dart commits where no such tensor is alive"
)


def graph_in_use(value) -> bool:
    """Is ``value`` a torch tensor whose autograd graph backward() still needs?"""
    torch = sys.modules.get("torch")
    return (
        torch is not None and isinstance(value, torch.Tensor) and value.requires_grad and not value.is_leaf
        and _graph_in_use(value, torch)
    )


def _graph_in_use(tensor, torch, limit: int = 64) -> bool:
    """Does backward() still need this non-leaf tensor's graph? The first node
    (of ``limit``) that saved a tensor tells: backward() frees saved tensors, and
    reading a freed one raises. A graph with no saved tensor in reach counts as
    spent (a sum of leaves, say): nothing in it would be lost but the graph."""
    todo = [tensor.grad_fn]
    while todo and limit:
        node = todo.pop()
        limit -= 1
        if node is None:
            continue
        for name in dir(node):
            if name.startswith("_saved_"):
                try:
                    value = getattr(node, name)
                except RuntimeError:
                    return False
                if isinstance(value, torch.Tensor):
                    return True
        todo.extend(next_node for next_node, _ in node.next_functions)
    return False


def _make_function(code_bytes, module_name, name, qualname, defaults, kwdefaults, cells, attributes,
                   globals_module: str | None = None):
    """``globals_module``: the module whose globals the code uses, when its
    ``__module__`` names another (copied by ``functools.wraps``)."""
    import marshal

    home = globals_module or module_name
    module = sys.modules.get(home)
    if module is None and home != "__main__":
        try:
            module = importlib.import_module(home)
        except ImportError:
            module = None
    namespace = module.__dict__ if module is not None else {"__name__": home}
    function = types.FunctionType(marshal.loads(code_bytes), namespace, name, defaults, cells)
    function.__module__ = module_name
    function.__qualname__ = qualname
    function.__kwdefaults__ = kwdefaults
    function.__dict__.update(attributes)
    return function


def _make_class(metaclass, name, bases, skeleton):
    return metaclass(name, bases, dict(skeleton))


def _fill_class(cls, namespace):
    for key, value in namespace.items():
        setattr(cls, key, value)


#: Class attributes a class saved by value gets anew when it is made.
_CLASS_SKIPPED = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__", "__slots__", "_abc_impl"})


def _plain_metaclasses() -> tuple:
    import abc

    return (type, abc.ABCMeta)


_PLAIN_METACLASSES = _plain_metaclasses()

_definitions_cache: dict[str, frozenset | None] = {}


def _top_level_definitions(path) -> frozenset | None:
    """The names bound by the top-level ``def`` and ``class`` statements (and
    class factories, ``Point = namedtuple(...)``) of the source file ``path``
    (None if it cannot be read). Read once per process: the
    running module was made from the source as it was then."""
    import ast

    if not isinstance(path, str):
        return None
    if path in _definitions_cache:
        return _definitions_cache[path]
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
        names = frozenset(
            stmt.name if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            else class_factory_name(stmt)
            for stmt in tree.body
        ) - {None}
    except (OSError, SyntaxError, ValueError):
        names = None
    _definitions_cache[path] = names
    return names


_user_modules: dict[tuple, bool] = {}


def user_module(name: str, main: types.ModuleType | None) -> bool:
    """Is module ``name`` the user's code: the main script, or a file in its
    folder or below?"""
    if name == "__main__":
        return True
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None) if module is not None else None
    main_path = getattr(main, "__file__", None) if main is not None else None
    if not isinstance(path, str) or not isinstance(main_path, str):
        return False
    key = (path, main_path)
    known = _user_modules.get(key)
    if known is None:
        known = _user_modules[key] = os.path.dirname(os.path.abspath(path)).startswith(
            os.path.dirname(os.path.abspath(main_path))
        )
    return known


#: How generators of the user's code are saved: resume/generators.py, which
#: registers itself (saving one means building its continuation on load, which
#: is resume's work; capture does not import resume).
_generators = None


def save_generators_with(save, can_save) -> None:
    global _generators
    _generators = (save, can_save)


def generator_savable(gen: types.GeneratorType, main: types.ModuleType | None = None) -> bool:
    """Can the pickler save this generator object (its contents aside)?"""
    main = main if main is not None else sys.modules.get("__main__")
    return _generators is not None and _generators[1](gen, lambda name: user_module(name, main))


def _dead_reference():
    """A weak reference whose object is gone (as the saved one's was)."""
    return weakref.ref(_Gone())


class _Gone:
    pass


def _empty_cell():
    return types.CellType()


def _fill_cell(cell, state):
    cell.cell_contents = state[0]


class _Storage:
    """One torch storage in a commit: its bytes go out of band (so an unchanged
    storage is stored once), and every tensor on it refers to this one object
    (so views and shared storages stay shared)."""

    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        import torch

        device = self.storage.device
        host = self.storage if device.type == "cpu" else self.storage.cpu()  # staged on the host
        flat = torch.empty(0, dtype=torch.uint8).set_(host)
        if device.type == "cpu":
            return _rebuild_storage, (pickle.PickleBuffer(flat.numpy()),)
        return _rebuild_storage, (pickle.PickleBuffer(flat.numpy()), str(device))


class StatePickler(pickle.Pickler):
    def __init__(self, file, buffer_callback=None, main_module: types.ModuleType | None = None):
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)
        self._main = main_module
        self._storages: dict[tuple, _Storage] = {}
        # Looked up once per pickler, not per object (reducer_override runs for every object).
        self._torch = sys.modules.get("torch")
        loaders = sys.modules.get(dataloader.MODULE)
        self._loader_types = (loaders._BaseDataLoaderIter, loaders.DataLoader) if loaders is not None else ()
        self._bar_type = progressbars.bar_class()
        self._pool_types = resources.pool_types()
        self._writer_type = resources.summary_writer_class()
        self._logging_types = resources.logging_types()
        # one isinstance for the common case (none of them) in reducer_override
        self._library_types = (*self._pool_types, *self._logging_types,
                               *(t for t in (self._writer_type, self._bar_type) if t is not None))

    def _reduce_tensor(self, tensor, torch):
        """Plain CPU and CUDA tensors and parameters at the storage level (CUDA
        storages copied to host memory at the commit, put back on their device on
        load); anything else (sparse, quantized, subclasses, other devices) goes
        through torch's own pickling."""
        if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.device.type not in ("cpu", "cuda"):
            return NotImplemented
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
            return NotImplemented
        if tensor.requires_grad and not tensor.is_leaf:
            if _graph_in_use(tensor, torch):
                raise pickle.PicklingError(GRAPH_IN_USE)
            return NotImplemented  # its graph is spent: torch saves it as a leaf, as good as any
        storage = tensor.untyped_storage()
        key = (str(tensor.device), storage.data_ptr(), storage.nbytes())
        proxy = self._storages.get(key)
        if proxy is None:
            proxy = self._storages[key] = _Storage(storage)
        return _rebuild_tensor, (
            proxy,
            tensor.storage_offset(),
            tuple(tensor.size()),
            tuple(tensor.stride()),
            tensor.dtype,
            tensor.requires_grad,
            type(tensor) is torch.nn.Parameter,
            tensor.grad,
        )

    def _user_module(self, name: str) -> bool:
        return user_module(name, self._main)

    def _by_value(self, obj) -> bool:
        """Must this function or class of the user's code be saved by value? Yes
        unless a top-level ``def``/``class`` of its module defines it, which is
        what resume runs again before loading: a closure, a lambda, or one
        defined in a loop body, a branch or a function is not found by name then.
        A function its name does not lead back to (a ``functools.wraps`` wrapper,
        such as the one an LR scheduler puts on ``optimizer.step``) is saved by
        value too: by name, pickle would refuse it."""
        qualname = obj.__qualname__
        function = isinstance(obj, types.FunctionType)
        if function and ("<locals>" in qualname or "<lambda>" in qualname):
            return True  # library ones too: argparse keeps a local function in every parser
        if not self._user_module(obj.__module__ or ""):
            return function and not self._found_by_name(obj)
        if "<locals>" in qualname or "<lambda>" in qualname:
            return True
        module = self._main if obj.__module__ == "__main__" else sys.modules.get(obj.__module__)
        names = _top_level_definitions(getattr(module, "__file__", None))
        if names is not None and qualname.split(".", 1)[0] not in names:
            return True
        return function and not self._found_by_name(obj)

    def _wrapped_under_its_name(self, function) -> bool:
        module = self._main if function.__module__ == "__main__" else sys.modules.get(function.__module__)
        found = module
        for part in function.__qualname__.split("."):
            found = getattr(found, part, None)
        return found is not None and found is not function and unwrapped(found, function.__qualname__) is function

    def _found_by_name(self, function) -> bool:
        module = self._main if function.__module__ == "__main__" else sys.modules.get(function.__module__)
        found = module
        for part in function.__qualname__.split("."):
            found = getattr(found, part, None)
        return found is function

    def _reduce_function(self, function):
        """A function of the user's code that resume cannot find by name is saved
        by value: its code (marshal), defaults and cells. Cells keep their
        identity (closures made together share them) and may refer back to the
        function (filled after it exists)."""
        import marshal

        if not self._by_value(function):
            return NotImplemented
        if self._wrapped_under_its_name(function):  # a decorator without functools.wraps
            return _find_wrapped, (function.__module__, function.__qualname__)
        home = function.__globals__.get("__name__")  # where it was defined; __module__ may be copied
        return _make_function, (
            marshal.dumps(function.__code__),
            function.__module__,
            function.__name__,
            function.__qualname__,
            function.__defaults__,
            function.__kwdefaults__,
            function.__closure__,
            dict(function.__dict__),
            *((home,) if isinstance(home, str) and home != function.__module__ else ()),
        )

    def _reduce_class(self, cls):
        """A class of the user's code that resume cannot find by name (defined in
        ``main()``, in a loop or a branch) is saved by value: an empty class made
        with its metaclass and bases, memoized before its namespace is filled (so
        methods that refer back to it, e.g. through ``super()``, get this one)."""
        if type(cls) not in _PLAIN_METACLASSES or not self._by_value(cls):
            return NotImplemented
        namespace = {}
        for key, value in cls.__dict__.items():
            if key in _CLASS_SKIPPED or isinstance(value, (types.MemberDescriptorType, types.GetSetDescriptorType)):
                continue
            namespace[key] = value
        skeleton = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        if "__slots__" in cls.__dict__:
            skeleton["__slots__"] = cls.__dict__["__slots__"]
        return _make_class, (type(cls), cls.__name__, cls.__bases__, skeleton), namespace, None, None, _fill_class

    def _reduce_library_object(self, obj):
        """Library objects holding live resources (capture/resources.py, progressbars.py)."""
        if self._pool_types and isinstance(obj, self._pool_types) and resources.shut_down(obj):
            return resources.ShutDown, (f"{type(obj).__module__}.{type(obj).__qualname__}",)
        if self._writer_type is not None and isinstance(obj, self._writer_type):
            return resources.reduce_summary_writer(obj)
        if self._logging_types and isinstance(obj, self._logging_types):
            return resources.reduce_logging(obj, self._logging_types)
        if self._bar_type is not None and isinstance(obj, self._bar_type):
            return progressbars.reduce_bar(obj)
        return NotImplemented

    def reducer_override(self, obj):
        if isinstance(obj, types.FunctionType):
            return self._reduce_function(obj)
        if type(obj) is types.GeneratorType and _generators is not None:
            reduced = _generators[0](obj, self._user_module)
            return NotImplemented if reduced is None else reduced
        if isinstance(obj, type):
            return self._reduce_class(obj)
        if type(obj) in (staticmethod, classmethod):  # in the namespace of a class saved by value
            return type(obj), (obj.__func__,)
        if type(obj) is property:
            return property, (obj.fget, obj.fset, obj.fdel, obj.__doc__)
        if isinstance(obj, BaseException) and _init_takes_other_arguments(type(obj)):
            # pickle would call FetchError(*e.args) on load, which its own __init__ refuses
            return _rebuild_exception, (type(obj), obj.args), obj.__dict__ or None
        if isinstance(obj, types.CellType):
            try:
                return _empty_cell, (), (obj.cell_contents,), None, None, _fill_cell
            except ValueError:  # an empty cell
                return _empty_cell, ()
        if type(obj) is weakref.ref:  # e.g. in the closure of a wrapper a library made
            target = obj()
            return (weakref.ref, (target,)) if target is not None else (_dead_reference, ())
        if isinstance(obj, types.ModuleType):
            if obj is self._main:
                return _import_module, ("__main__",)
            return _import_module, (obj.__name__,)
        if isinstance(obj, (io.TextIOWrapper, io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.FileIO)):
            if obj.closed:
                return _closed_file, (isinstance(obj, (io.BufferedIOBase, io.RawIOBase)),)
            state = _file_state(obj)
            if state is not None:
                return _reopen, state
        torch = self._torch
        if torch is not None:
            if isinstance(obj, torch.Tensor):
                return self._reduce_tensor(obj, torch)
            if isinstance(obj, torch.optim.Optimizer):
                # Its __getstate__ keeps three fields; an optimizer's own (LBFGS's
                # _params, a subclass's counters) would be lost.
                return copyreg.__newobj__, (type(obj),), dict(obj.__dict__)
            if self._loader_types and isinstance(obj, self._loader_types):
                if isinstance(obj, self._loader_types[0]):
                    return dataloader.reduce_iterator(obj)
                return dataloader.reduce_loader(obj)
        if self._library_types and isinstance(obj, self._library_types):
            reduced = self._reduce_library_object(obj)
            if reduced is not NotImplemented:
                return reduced
        numpy = sys.modules.get("numpy")
        if numpy is not None and type(obj) is numpy.memmap and obj.mode in ("r", "r+", "w+") and _maps_a_file(obj):
            return _reduce_memmap(obj)
        if numpy is not None and isinstance(obj, numpy.dtype) and obj.isbuiltin == 1 and obj.metadata is None:
            # By its name: NumPy's own pickling makes a new dtype object, so a loaded
            # array's dtype would not be `np.dtype("float64")` itself (and pickled
            # again, its bytes would differ from the uninterrupted run's).
            return numpy.dtype, (obj.str,)
        if numpy is not None and type(obj) is numpy.ndarray and obj.base is not None:
            root = _root_array(obj)
            if (
                root is not None
                and (root.flags.c_contiguous or root.flags.f_contiguous)
                and not root.dtype.hasobject
            ):
                start = obj.__array_interface__["data"][0] - root.__array_interface__["data"][0]
                if 0 <= start <= root.nbytes:
                    return _rebuild_view, (
                        root,
                        start,
                        obj.shape,
                        obj.strides,
                        obj.dtype,
                        bool(obj.flags.writeable),
                    )
        return NotImplemented


#: The ``main_namespace`` of the load in progress (where objects of the script
#: that are re-created, not looked up, get their globals: generators).
_loading_main: list[dict | None] = [None]


def loading_main_namespace() -> dict:
    """The script's namespace for the load in progress: the one the loader was
    given (dart.load(run_source=True), dart show), else ``__main__``'s."""
    return _loading_main[-1] if _loading_main[-1] is not None else sys.modules["__main__"].__dict__


class StateUnpickler(pickle.Unpickler):
    """Resolves ``__main__`` names against ``main_namespace`` when given."""

    def __init__(self, file, buffers=None, main_namespace: dict | None = None):
        super().__init__(file, buffers=buffers)
        self._main_ns = main_namespace

    def load(self):
        _loading_main.append(self._main_ns)
        try:
            return super().load()
        finally:
            _loading_main.pop()

    def find_class(self, module, name):
        if module == "__main__" and self._main_ns is not None:
            target = self._main_ns
            obj = None
            for part in name.split("."):
                obj = target.get(part) if isinstance(target, dict) else getattr(target, part, None)
                if obj is None:
                    break
                target = obj
            if obj is not None:
                return obj
            raise pickle.UnpicklingError(
                f"the script defines no '{name}' any more (needed to load a saved object)"
            )
        return super().find_class(module, name)


#: Buffers smaller than this stay in the pickle stream: each out-of-band buffer
#: becomes a stored object (a file, fsync'd), which only pays for big data.
OUT_OF_BAND_MIN = 64 * 1024


def dumps(obj, main_module=None) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``obj``; returns the stream and the out-of-band buffers (not copied)."""
    buffers: list[pickle.PickleBuffer] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        if buffer.raw().nbytes < OUT_OF_BAND_MIN:
            return True  # true: serialize in band
        buffers.append(buffer)
        return False

    stream = io.BytesIO()
    StatePickler(stream, buffer_callback=out_of_band, main_module=main_module).dump(obj)
    return stream.getvalue(), buffers


def loads(data: bytes, buffers, main_namespace: dict | None = None):
    return StateUnpickler(io.BytesIO(data), buffers=buffers, main_namespace=main_namespace).load()
