"""The IDGBR Processing provider (id "idgbr"): the engine in the toolbox, models, batch and qgis_process."""
