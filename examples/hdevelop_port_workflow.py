"""MVTec's classification heatmap workflow, ported from HDevelop line by line.

The HDevelop example behind it selects a device, reads a classifier, and for each image shows
the Grad-CAM heatmap beside the confidence-based heatmap; then it converts the model to
float16 with optimize_dl_model_for_inference and infers again. Each Python statement is
preceded by the HDevelop line it replaces, as a comment. Run it as it is (the demo model and
images) or give a model, an image folder and an output folder:

    python examples/hdevelop_port_workflow.py [MODEL.onnx IMAGE_DIR OUT_DIR]

OUT_DIR (default out/hdevelop_workflow/) receives one picture per image with both heatmaps
side by side, and results.jsonl: per image the class, both heatmaps' peaks (in pixels of the
model's input) and the float16 model's class, confidence and Grad-CAM peak.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import dlheatmap.halcon as ha

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def peak(heatmap: np.ndarray) -> dict:
    """The strongest pixel of a heatmap as (x, y)."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return {"x": int(col), "y": int(row)}


def run_workflow(model_file: str, image_dir: str, out_dir: str) -> list[dict]:
    """The ported script: returns one record per image (also written to results.jsonl)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    records = []
    # * Select a device: a GPU if there is one, else the CPU.
    # query_available_dl_devices (['runtime', 'runtime'], ['gpu', 'cpu'], DLDeviceHandles)
    DLDeviceHandles = ha.query_available_dl_devices(["runtime", "runtime"], ["gpu", "cpu"])
    # DLDevice := DLDeviceHandles[0]
    DLDevice = DLDeviceHandles[0]
    # get_dl_device_param (DLDevice, 'name', DLDeviceName)
    DLDeviceName = ha.get_dl_device_param(DLDevice, "name")
    print("device:", DLDeviceName[0])
    # read_dl_model (ModelFile, DLModelHandle)
    DLModelHandle = ha.read_dl_model(model_file)
    # set_dl_model_param (DLModelHandle, 'device', DLDevice)
    ha.set_dl_model_param(DLModelHandle, "device", DLDevice)
    # create_dl_preprocess_param_from_model (DLModelHandle, 'none', 'full_domain', [], [], [],
    #                                        DLPreprocessParam)
    DLPreprocessParam = ha.create_dl_preprocess_param_from_model(
        DLModelHandle, "none", "full_domain", [], [], [])
    # * Parameters of the confidence-based heatmap. MVTec's example sets 30 and 10 for its
    # * input size; here an eighth and a thirty-second of the model's input width.
    # get_dl_model_param (DLModelHandle, 'image_width', ImageWidth)
    ImageWidth = ha.get_dl_model_param_s(DLModelHandle, "image_width")
    # create_dict (GenParamConfidence)
    GenParamConfidence = ha.create_dict()
    # set_dict_tuple (GenParamConfidence, 'feature_size', ImageWidth / 8)
    ha.set_dict_tuple(GenParamConfidence, "feature_size", ImageWidth // 8)
    # set_dict_tuple (GenParamConfidence, 'sampling_size', ImageWidth / 32)
    ha.set_dict_tuple(GenParamConfidence, "sampling_size", max(1, ImageWidth // 32))
    # create_dict (WindowHandleDict)
    WindowHandleDict = ha.create_dict()
    # list_image_files (ImageDir, 'default', [], ImageFiles)
    ImageFiles = sorted(str(p) for p in Path(image_dir).iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES)
    # DLSamples := []
    DLSamples = []
    # for Index := 0 to |ImageFiles| - 1 by 1
    for Index in range(len(ImageFiles)):
        # read_image (Image, ImageFiles[Index])
        Image = ha.read_image(ImageFiles[Index])
        # gen_dl_samples_from_images (Image, DLSample)
        DLSample = ha.gen_dl_samples_from_images(Image)
        # preprocess_dl_samples (DLSample, DLPreprocessParam)
        ha.preprocess_dl_samples(DLSample, DLPreprocessParam)
        # DLSamples := [DLSamples, DLSample]
        DLSamples.append(DLSample[0])
        # * Grad-CAM: one inference, no parameters.
        # gen_dl_model_heatmap (DLModelHandle, DLSample, 'grad_cam', [], [], DLResult)
        DLResult = ha.gen_dl_model_heatmap(DLModelHandle, DLSample, "grad_cam", [], [])
        # * The confidence-based heatmap of the same result, for its top class.
        # gen_dl_model_classification_heatmap (DLModelHandle, DLSample, DLResult,
        #                                      GenParamConfidence)
        ha.gen_dl_model_classification_heatmap(DLModelHandle, DLSample, DLResult,
                                               GenParamConfidence)
        # dev_display_dl_data (DLSample, DLResult, [], ['heatmap_grad_cam',
        #                      'heatmap_confidence_based'], [], WindowHandleDict)
        ha.dev_display_dl_data(DLSample, DLResult, [],
                               ["heatmap_grad_cam", "heatmap_confidence_based"], [],
                               WindowHandleDict)
        # dump_window_image (GradCamPicture, WindowHandleDict.heatmap_grad_cam)
        GradCamPicture = ha.dump_window_image(WindowHandleDict["heatmap_grad_cam"])
        # dump_window_image (ConfidencePicture, WindowHandleDict.heatmap_confidence_based)
        ConfidencePicture = ha.dump_window_image(WindowHandleDict["heatmap_confidence_based"])
        # tile_images ([GradCamPicture, ConfidencePicture], SideBySide, 2, 'horizontal')
        SideBySide = side_by_side(GradCamPicture, ConfidencePicture)
        # write_image (SideBySide, 'png', 0, OutDir + '/' + Index + '_heatmaps')
        ha.write_image(SideBySide, "png", 0, f"{out_dir}/{Index}_heatmaps")
        # get_dict_tuple (DLResult, 'classification_class_names', ClassNames)
        ClassNames = ha.get_dict_tuple(DLResult[0], "classification_class_names")
        # get_dict_tuple (DLResult, 'heatmap_grad_cam', GradCam)
        GradCam = ha.get_dict_tuple(DLResult[0], "heatmap_grad_cam")
        # get_dict_tuple (DLResult, 'heatmap_confidence_based', ConfidenceBased)
        ConfidenceBased = ha.get_dict_tuple(DLResult[0], "heatmap_confidence_based")
        # get_dict_tuple (DLResult, 'classification_class_ids', ClassIDs)
        ClassIDs = ha.get_dict_tuple(DLResult[0], "classification_class_ids")
        # get_dict_object (HeatmapGradCam, GradCam, 'heatmap_image_class_' + ClassIDs[0])
        HeatmapGradCam = ha.get_dict_object(GradCam[0], f"heatmap_image_class_{ClassIDs[0]}")
        # get_dict_object (HeatmapConfidence, ConfidenceBased,
        #                  'heatmap_image_class_' + ClassIDs[0])
        HeatmapConfidence = ha.get_dict_object(ConfidenceBased[0],
                                               f"heatmap_image_class_{ClassIDs[0]}")
        records.append({"image": ImageFiles[Index], "class_name": ClassNames[0],
                        "grad_cam_peak": peak(HeatmapGradCam),
                        "confidence_based_peak": peak(HeatmapConfidence)})
    # endfor
    # * Convert the model to float16 for the device and infer again.
    # get_dl_device_param (DLDevice, 'optimize_for_inference_params', OptimizeParams)
    OptimizeParams = ha.get_dl_device_param(DLDevice, "optimize_for_inference_params")
    # optimize_dl_model_for_inference (DLModelHandle, DLDevice, 'float16', DLSamples,
    #                                  OptimizeParams, DLModelHandleFloat16, ConversionReport)
    DLModelHandleFloat16, ConversionReport = ha.optimize_dl_model_for_inference(
        DLModelHandle, DLDevice, "float16", DLSamples, OptimizeParams)
    print("float16 conversion:", ConversionReport)
    # apply_dl_model (DLModelHandleFloat16, DLSamples, [], DLResultsFloat16)
    DLResultsFloat16 = ha.apply_dl_model(DLModelHandleFloat16, DLSamples, [])
    # * The float16 model explains its classes with Grad-CAM too.
    # gen_dl_model_heatmap (DLModelHandleFloat16, DLSamples, 'grad_cam', [], [],
    #                       DLResultsFloat16Heatmap)
    DLResultsFloat16Heatmap = ha.gen_dl_model_heatmap(DLModelHandleFloat16, DLSamples,
                                                      "grad_cam", [], [])
    # for Index := 0 to |DLSamples| - 1 by 1
    for Index in range(len(DLSamples)):
        # get_dict_tuple (DLResultsFloat16[Index], 'classification_class_names', Names16)
        Names16 = ha.get_dict_tuple(DLResultsFloat16[Index], "classification_class_names")
        # get_dict_tuple (DLResultsFloat16[Index], 'classification_confidences', Conf16)
        Conf16 = ha.get_dict_tuple(DLResultsFloat16[Index], "classification_confidences")
        # get_dict_tuple (DLResultsFloat16Heatmap[Index], 'heatmap_grad_cam', GradCam16)
        GradCam16 = ha.get_dict_tuple(DLResultsFloat16Heatmap[Index], "heatmap_grad_cam")
        records[Index].update(float16_class_name=Names16[0], float16_confidence=Conf16[0],
                              float16_grad_cam_peak=peak(next(iter(GradCam16[0].values()))))
        # * ImageFiles[Index] + ': ' + Names16[0] + ' (' + Conf16[0]$'.3f' + ', float16)'
        print(f"{ImageFiles[Index]}: {Names16[0]} ({Conf16[0]:.3f}, float16)")
    # endfor
    with open(Path(out_dir) / "results.jsonl", "w", encoding="utf-8") as results:
        results.writelines(json.dumps(record) + "\n" for record in records)
    return records


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two pictures next to each other, the shorter one padded with black at the bottom."""
    height = max(left.shape[0], right.shape[0])

    def padded(picture):
        return np.pad(picture, ((0, height - picture.shape[0]), (0, 0), (0, 0)))

    return np.concatenate([padded(left), padded(right)], axis=1)


def main(argv: list[str]) -> int:
    from demo_model import example_inputs

    inputs = example_inputs(argv, "out/hdevelop_workflow")
    if inputs is None:
        print(__doc__, file=sys.stderr)
        return 2
    model_file, image_dir, out_dir = inputs
    records = run_workflow(model_file, image_dir, out_dir)
    print(f"{len(records)} images; pictures and results.jsonl in {out_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
