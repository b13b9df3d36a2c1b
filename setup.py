from glob import glob
from setuptools import Extension, setup
setup(ext_modules=[Extension("kcont._core._ckcont", sources=sorted(glob("src/kcont/_core/_ckcont/*.c")), depends=["src/kcont/_core/_ckcont/ckcont.h"], optional=True, extra_compile_args=["-Wall","-Wextra","-Wno-unused-parameter","-Wno-missing-field-initializers"])])
