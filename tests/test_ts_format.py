import numpy as np
import pytest

from jaxcnn.data.ts_format import TsFormatError, read_ts

UNIVARIATE = """# a comment
@problemName Toy
@univariate true
@equalLength true
@classLabel true a b
@data
1,2,3:a
4,5,6:b
"""

MULTI_VARLEN = """@problemName Toy2
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3:10,20,30:down
4,5:40,?:up
"""


def _write(tmp_path, text, name="x.ts"):
  p = tmp_path / name
  p.write_text(text)
  return p


def test_univariate(tmp_path):
  d = read_ts(_write(tmp_path, UNIVARIATE))
  assert d.class_names == ["a", "b"] and d.labels == ["a", "b"]
  np.testing.assert_array_equal(d.series[1], [[4], [5], [6]])
  assert d.equal_length and d.header["problemname"] == "Toy"


def test_multivariate_variable_length_and_missing(tmp_path):
  d = read_ts(_write(tmp_path, MULTI_VARLEN))
  assert d.series[0].shape == (3, 2) and d.series[1].shape == (2, 2)
  np.testing.assert_array_equal(d.series[0][:, 1], [10, 20, 30])
  assert np.isnan(d.series[1][1, 1]) and not d.equal_length
  assert d.labels == ["down", "up"]


@pytest.mark.parametrize("text,match", [
    (UNIVARIATE.replace("4,5,6:b", "4,x,6:b"), r"x.ts:8: not a number"),
    (UNIVARIATE.replace("4,5,6:b", "4,5,6:c"), r"labels \['c'\] are not in the @classLabel header"),
    (UNIVARIATE.split("@data")[0], "no @data section"),
    (MULTI_VARLEN.replace("4,5:40,?:up", "4,5:up"), r"x.ts:8: 1 dimensions, earlier lines have 2"),
])
def test_errors_name_file_and_line(tmp_path, text, match):
  with pytest.raises(TsFormatError, match=match):
    read_ts(_write(tmp_path, text))
